"""Key sets of the score cache: 16-byte row keys as sorted numpy 'S16' arrays, read from a
file's key column, and the one membership rule (a binary search) that lookup, compaction
and the dry run share."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..storage import filesystem

KEY = "cache_key"


def as_numpy(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Non-null fixed 16-byte keys -> a numpy 'S16' array (sortable, searchable)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if keys.null_count:
        keys = keys.drop_null()
    data = keys.buffers()[1]
    return np.frombuffer(data, dtype="S16", count=len(keys), offset=keys.offset * 16)


def file_keys(uri: str) -> np.ndarray:
    """The keys of a Parquet file (a part, a data file, an index), in row order."""
    fs, path = filesystem(uri)
    return as_numpy(pq.read_table(path, filesystem=fs, columns=[KEY]).column(KEY))


def member(wanted: np.ndarray, sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted key: whether `sorted_keys` holds it, and where (meaningful where it
    does)."""
    if not len(sorted_keys):
        return np.zeros(len(wanted), bool), np.zeros(len(wanted), np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
    return sorted_keys[at] == wanted, at
