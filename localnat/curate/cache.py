"""The score cache (docs/method.md §10): a night scores only what is new.

    CACHE/v1-<settings>/settings.json                 what every score below depends on
    CACHE/v1-<settings>/parts/<utc>-<uuid>.parquet    cache_key + every score column

`<settings>` hashes the student's identity (every file's digest and its prompt probe,
identity.py) and every setting declared to change a score; `cache_key` hashes a row's
prompt, response and given steps. A changed student or setting is another namespace:
nothing in it, nothing wrong reused.

Append-only and safe to share: a run writes new parts under unique names and never
rewrites or deletes one; a reader dedupes by key (the earliest part wins). The lookup runs
in the Prepare actors (`Lookup`), which hold the keys as one numpy array (16 bytes a row);
the driver only lists the parts. A part that cannot be read is reported and its rows are
misses: rescored, never wrong; so is a part whose columns do not have the types this
version writes.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..fields import SCORES
from ..logs import LOG
from ..redact import redact
from ..scoring.schema import UNSAMPLED_SCHEMA, result_schema
from .columns import result_columns
from .config import CurateConfig
from .identity import StudentIdentity
from .storage import filesystem, join, list_files, read_text, write_table, write_text

VERSION = "v1"
KEY = "cache_key"
# A call of cache hits carries about this many response tokens: writing them is cheap.
HIT_CALL_TOKENS = 2_000_000
_PARTS_HELD = 8  # cache parts an actor keeps read (hits come in runs from the same parts)


def namespace(cfg: CurateConfig, student: StudentIdentity, columns: list[str] | None = None):
    """The cache directory of this student and these settings. The student's path is left
    out (the same bytes elsewhere hit); its identity is in. `columns`: what the namespace
    holds, the score columns unless said (racing's exact pass holds its own,
    `UNSAMPLED_RESULTS`): other columns, another namespace."""
    text = json.dumps(_about(cfg, student, columns), sort_keys=True, default=str)
    digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
    return join(cfg.cache, f"{VERSION}-{digest}")


def _about(cfg: CurateConfig, student: StudentIdentity, columns: list[str] | None) -> dict:
    return {
        "settings": cfg.settings(SCORES),
        "student": student.digest,
        "prompt_probe": student.prompt_probe,
        "columns": columns or result_columns(cfg.score),
    }


def expected_schema(cfg: CurateConfig, columns: list[str]) -> pa.Schema:
    """The types a part of this namespace holds: the key and the scorer's own types."""
    types = {f.name: f for f in (*result_schema(cfg.score.windows), *UNSAMPLED_SCHEMA)}
    return pa.schema([pa.field(KEY, pa.binary(16)), *(types[c] for c in columns)])


def open_namespace(
    cfg: CurateConfig,
    student: StudentIdentity,
    write: bool = True,
    columns: list[str] | None = None,
) -> tuple[str, list[str]]:
    """The namespace (of `columns`, see `namespace`) and its usable parts (each part's
    footer read, in parallel); an unreadable part, or one whose columns have other types, is
    reported here, once, by name, and left out: its rows are misses, rescored."""
    columns = columns or result_columns(cfg.score)
    ns = namespace(cfg, student, columns)
    if write and read_text(join(ns, "settings.json")) is None:
        about = {**_about(cfg, student, columns), "student": student.name}
        about["identity"] = student.record()
        write_text(join(ns, "settings.json"), redact(json.dumps(about, indent=2, default=str)))
    parts = [u for u in list_files(join(ns, "parts")) if u.endswith(".parquet")]
    expected = expected_schema(cfg, columns)

    def usable(uri: str) -> bool:
        try:
            fs, path = filesystem(uri)
            schema = pq.read_schema(path, filesystem=fs)
        except Exception as err:  # noqa: BLE001 - any unreadable part: its rows are misses
            LOG.warning(
                f"cache part {redact(uri)} is unreadable, its rows will be rescored "
                f"({type(err).__name__}: {str(err)[:200]})"
            )
            return False
        wrong = [
            f"{f.name} is {schema.field(f.name).type if f.name in schema.names else 'missing'}"
            f" (expected {f.type})"
            for f in expected
            if f.name not in schema.names or not schema.field(f.name).type.equals(f.type)
        ]
        if wrong:
            LOG.warning(
                f"cache part {redact(uri)} does not hold this version's columns "
                f"({'; '.join(wrong[:3])}), its rows will be rescored"
            )
        return not wrong

    with ThreadPoolExecutor(16) as pool:
        ok = list(pool.map(usable, parts))
    return ns, [u for u, good in zip(parts, ok) if good]


def row_keys(table: pa.Table) -> pa.Array:
    """Each row's cache key (16 bytes; null for a rejected row): its prompt, response and
    given steps, exactly as the scorer sees them."""
    out = []
    cols = table.select(["prompt", "response", "steps_json", "reject_reason"]).to_pydict()
    for prompt, response, steps, reason in zip(*cols.values()):
        if reason is not None:
            out.append(None)
            continue
        text = json.dumps([prompt, response, steps], ensure_ascii=False)
        out.append(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest())
    return pa.array(out, pa.binary(16))


def _as_numpy(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Non-null fixed 16-byte keys -> a numpy 'S16' array (sortable, searchable)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if keys.null_count:
        keys = keys.drop_null()
    data = keys.buffers()[1]
    return np.frombuffer(data, dtype="S16", count=len(keys), offset=keys.offset * 16)


class Lookup:
    """The keys of every readable part (sorted, deduped: the earliest part wins) and the
    parts themselves, read when a hit needs them. Built once per Prepare actor."""

    def __init__(self, parts: list[str], cfg: CurateConfig, columns=None):
        self.parts, self.cfg = parts, cfg
        self.columns = columns or result_columns(cfg.score)
        self.bad: set[int] = set()
        self.held: dict[int, pa.Table] = {}

        def keys(i):
            try:
                fs, path = filesystem(parts[i])
                return _as_numpy(pq.read_table(path, filesystem=fs, columns=[KEY]).column(KEY))
            except Exception as err:  # noqa: BLE001 - its rows are misses
                self._unreadable(i, err)
                return np.empty(0, "S16")

        with ThreadPoolExecutor(16) as pool:
            found = list(pool.map(keys, range(len(parts))))
        every = np.concatenate(found) if found else np.empty(0, "S16")
        part = np.repeat(np.arange(len(found), dtype=np.int32), [len(k) for k in found])
        row = np.concatenate([np.arange(len(k), dtype=np.int32) for k in found] or [part])
        # stable sort: among equal keys the earliest part comes first, and unique keeps it
        order = np.argsort(every, kind="stable")
        self.keys, first = np.unique(every[order], return_index=True)
        self.part, self.row = part[order][first], row[order][first]

    def __len__(self) -> int:
        return len(self.keys)

    def _unreadable(self, i: int, err: Exception) -> None:
        if i not in self.bad:
            self.bad.add(i)
            LOG.warning(
                f"cache part {redact(self.parts[i])} is unreadable, "
                f"its rows are rescored ({type(err).__name__}: {str(err)[:200]})"
            )

    def find(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """For each key: whether the cache holds it, and where (index into self.part/row)."""
        found = np.zeros(len(keys), bool)
        where = np.zeros(len(keys), np.int64)
        valid = np.flatnonzero(pc.is_valid(keys).to_numpy(zero_copy_only=False))
        if not len(valid) or not len(self.keys):
            return found, where
        wanted = _as_numpy(keys.take(pa.array(valid)))
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        hit = self.keys[at] == wanted
        found[valid[hit]] = True
        where[valid[hit]] = at[hit]
        return found, where

    def split(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Working rows -> (hits with every score column; the rest, with their
        cache_key, to be scored). A hit over --max-response-tokens goes to the rest, where it
        is rejected as without a cache."""
        keys = row_keys(table)
        table = table.append_column(KEY, keys)
        found, where = self.find(keys)
        hit = np.flatnonzero(found)
        part, row = self.part[where[hit]], self.row[where[hit]]
        values = {int(i): self._part(int(i)) for i in np.unique(part)}
        readable = np.isin(part, [i for i, v in values.items() if v is not None])
        hit, part, row = hit[readable], part[readable], row[readable]
        if not len(hit):
            return table.slice(0, 0), table
        taken = _take_grouped(values, part, row)
        limit = self.cfg.max_response_tokens
        if limit is not None:  # over it: rejected as without a cache
            ok = pc.less_equal(taken.column("n_response_tokens"), limit)
            hit, taken = hit[ok.to_numpy(zero_copy_only=False)], taken.filter(ok)
        found = np.zeros(table.num_rows, bool)
        found[hit] = True
        hits = table.take(pa.array(hit, pa.int64()))
        for name in self.columns:
            hits = hits.append_column(name, taken.column(name))
        return hits, table.filter(pa.array(~found))

    def _part(self, i: int) -> pa.Table | None:
        if i in self.bad:
            return None
        if i not in self.held:
            try:
                fs, path = filesystem(self.parts[i])
                table = pq.read_table(path, filesystem=fs, columns=self.columns)
            except Exception as err:  # noqa: BLE001 - its rows are misses, rescored
                self._unreadable(i, err)
                return None
            if len(self.held) >= _PARTS_HELD:
                self.held.pop(next(iter(self.held)))
            self.held[i] = table
        return self.held[i]


def _take_grouped(values: dict[int, pa.Table], part: np.ndarray, row: np.ndarray) -> pa.Table:
    """The cached rows (part, row) in the given order: one take per part, then one take to
    restore the order."""
    pieces, order = [], []
    for p in np.unique(part):
        mine = np.flatnonzero(part == p)
        pieces.append(values[int(p)].take(pa.array(row[mine])))
        order.append(mine)
    table = pa.concat_tables(pieces)
    return table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))


def append(ns: str, table: pa.Table, columns: list[str]) -> None:
    """Append the freshly scored rows of a call (not rejected, not reused) to the cache:
    their key and `columns`, as a new part (the writer is `sink.Sink`)."""
    fresh = table.filter(
        pc.and_(pc.is_null(table.column("reject_reason")), pc.invert(table.column("reused")))
    )
    if not fresh.num_rows:
        return
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
    write_table(fresh.select([KEY, *columns]), join(ns, "parts", name))
