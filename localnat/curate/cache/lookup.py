"""Finding rows in the score cache (docs/method.md §10).

One sorted key index per view of a namespace (`build_index`: the generation's index, then the
parts' keys, every key once), built by one Ray task into the object store and mapped
read-only by every reading process on a node: a process holds no private copy of the keys, so a
node holds 28 bytes a key once, whatever the number of processes. A hit's values are read when
it is found, by row group of a data file (a night's hits come in runs: data keeps the order
rows were written in) or by part, a bounded number held at a time.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...logs import LOG
from ...redact import redact
from ..storage import filesystem
from .keys import KEY, as_numpy, file_keys, member
from .namespace import View, load_index, row_keys

HELD = 16  # row groups (or parts) an actor keeps read


@dataclass
class Index:
    """Every key of a view once, sorted, with where its row is: `source` numbers
    `View.sources` (data files, then parts), `row` is the row within it."""

    keys: np.ndarray  # [n] S16, sorted, unique
    source: np.ndarray  # [n] int32
    row: np.ndarray  # [n] int64

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.source.nbytes + self.row.nbytes


def build_index(view: View) -> Index:
    """The generation's index (sorted, unique; its bad data files' entries left out),
    merged with the parts' keys: a key of the generation wins over a part's, an earlier
    part's over a later one's. A part that cannot be read adds nothing (its rows are
    misses)."""
    gen = view.generation
    keys, source, row = load_index(view.namespace, gen, view.bad_files)
    first = len(gen["files"]) if gen else 0

    def part_keys(uri: str) -> np.ndarray:
        try:
            return file_keys(uri)
        except Exception as err:  # noqa: BLE001 - its rows are misses
            LOG.warning(f"cache part {redact(uri)} is unreadable ({type(err).__name__})")
            return np.empty(0, "S16")

    with ThreadPoolExecutor(16) as pool:
        found = list(pool.map(part_keys, view.parts))
    if not any(len(k) for k in found):
        return Index(keys, source, row)
    p_keys = np.concatenate(found)
    p_source = np.repeat(
        np.arange(first, first + len(found), dtype=np.int32), [len(k) for k in found]
    )
    p_row = np.concatenate([np.arange(len(k), dtype=np.int64) for k in found])
    # stable: among equal keys the earliest part first, and unique keeps it
    order = np.argsort(p_keys, kind="stable")
    p_keys, pick = np.unique(p_keys[order], return_index=True)
    p_source, p_row = p_source[order][pick], p_row[order][pick]
    fresh = ~member(p_keys, keys)[0]  # the generation's copy wins
    p_keys, p_source, p_row = p_keys[fresh], p_source[fresh], p_row[fresh]
    at = np.searchsorted(keys, p_keys)
    return Index(
        np.insert(keys, at, p_keys), np.insert(source, at, p_source), np.insert(row, at, p_row)
    )


class Lookup:
    """A reading process's view of the cache: the shared `Index` and the sources' values,
    read as hits need them (`split`)."""

    def __init__(self, view: View, index: Index, columns: list[str], max_response_tokens=None):
        self.view, self.index, self.columns = view, index, columns
        self.sources = view.sources
        self.row_group = (view.generation or {}).get("row_group")
        self.n_files = len((view.generation or {}).get("files", []))
        self.max_tokens = max_response_tokens
        self.bad: set[int] = set()
        self.held: OrderedDict = OrderedDict()

    @classmethod
    def open(cls, shared, columns: list[str], max_response_tokens=None) -> Lookup:
        """A reading process's Lookup of `shared_view`'s (view, index ref): the index mapped
        from the object store, not copied."""
        import ray

        view, ref = shared
        return cls(view, ray.get(ref), columns, max_response_tokens)

    def __len__(self) -> int:
        return len(self.index.keys)

    def find(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """For each key: whether the cache holds it, and where (an index into `Index`)."""
        found = np.zeros(len(keys), bool)
        where = np.zeros(len(keys), np.int64)
        valid = np.flatnonzero(pc.is_valid(keys).to_numpy(zero_copy_only=False))
        if not len(valid) or not len(self.index.keys):
            return found, where
        hit, at = member(as_numpy(keys.take(pa.array(valid))), self.index.keys)
        found[valid[hit]] = True
        where[valid[hit]] = at[hit]
        return found, where

    def split(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Working rows -> (hits with every score column; the rest, with their cache_key, to
        be scored). A hit over --max-response-tokens, or whose source cannot be read, goes to
        the rest (rejected, or rescored, as without a cache)."""
        keys = row_keys(table)
        table = table.append_column(KEY, keys)
        found, where = self.find(keys)
        hit = np.flatnonzero(found)
        source = self.index.source[where[hit]]
        row = self.index.row[where[hit]]
        in_file = source < self.n_files  # data files are read by row group, parts whole
        size = self.row_group or 1
        block = np.where(in_file, row // size, 0)
        at = np.where(in_file, row % size, row)
        pieces, order = [], []
        for s, b in sorted(set(zip(source.tolist(), block.tolist()))):
            values = self._block(s, b)
            if values is None:
                continue  # unreadable: these rows are misses
            mine = np.flatnonzero((source == s) & (block == b))
            pieces.append(values.take(pa.array(at[mine])))
            order.append(mine)
        if not pieces:
            return table.slice(0, 0), table
        order = np.concatenate(order)
        taken = pa.concat_tables(pieces).take(pa.array(np.argsort(order, kind="stable")))
        hit = hit[np.sort(order)]
        if self.max_tokens is not None:  # over it: rejected as without a cache
            keep = pc.less_equal(taken.column("n_response_tokens"), self.max_tokens)
            hit, taken = hit[keep.to_numpy(zero_copy_only=False)], taken.filter(keep)
        found = np.zeros(table.num_rows, bool)
        found[hit] = True
        hits = table.take(pa.array(hit, pa.int64()))
        for name in self.columns:
            hits = hits.append_column(name, taken.column(name))
        return hits, table.filter(pa.array(~found))

    def _block(self, source: int, block: int) -> pa.Table | None:
        """A data file's row group, or a whole part (`columns`); None if it cannot be read."""
        if source in self.bad:
            return None
        key = (source, block)
        if key not in self.held:
            try:
                fs, path = filesystem(self.sources[source])
                with fs.open_input_file(path) as f:
                    reader = pq.ParquetFile(f)
                    if source < self.n_files:
                        table = reader.read_row_group(block, columns=self.columns)
                    else:
                        table = reader.read(columns=self.columns)
            except Exception as err:  # noqa: BLE001 - its rows are misses, rescored
                self.bad.add(source)
                LOG.warning(
                    f"cache file {redact(self.sources[source])} is unreadable, its rows are "
                    f"rescored ({type(err).__name__}: {str(err)[:200]})"
                )
                return None
            if len(self.held) >= HELD:
                self.held.popitem(last=False)
            self.held[key] = table
        self.held.move_to_end(key)
        return self.held[key]


def shared_view(view: View):
    """(view, the ObjectRef of its index): the index built by one Ray task into the object
    store, which every reading process maps (`Lookup.open`)."""
    import ray

    LOG.info(
        f"score cache {redact(view.namespace)}: generation "
        f"{(view.generation or {}).get('generation', 0)}, {len(view.parts)} parts since"
    )
    return view, ray.remote(num_cpus=0.25)(build_index).remote(view)
