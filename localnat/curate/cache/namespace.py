"""The score cache (docs/method.md §10): a night scores only what is new. Here: a
namespace's schema and what a reader sees of it; its name is the run's `ScoreCache`'s
(score_cache.py), and everything in it is written by writer.py.

    CACHE/v1-<settings>/settings.json                what every score below depends on
    CACHE/v1-<settings>/parts/<utc>-<uuid>.parquet   appended by runs: cache_key + scores
    CACHE/v1-<settings>/generations/g000008.json     a compaction's commit
    CACHE/v1-<settings>/gen/g000008/                 its data files and sorted key index
    CACHE/v1-<settings>/readers/ _lease/             runs reading it now; the compaction
    CACHE/v1-<settings>/aside/                       what could not be used: set aside, kept

`<settings>` hashes the scoring code's version (`SCORING_VERSION`), the student's identity
(every file's digest and its prompt probe, run/identity.py) and every setting declared to change
a score; `cache_key` hashes a row's prompt, response and given steps. A changed student,
setting or scoring version is another namespace: nothing in it, nothing wrong reused.
settings.json declares the schema every part and data file holds: a compaction folds by it,
never by what a part says of itself.

Safe to share: runs append parts under unique names and never rewrite or delete one; a
compaction folds them into a new generation under the namespace's lease. A reader sees the
latest committed generation and the parts it did not absorb (`View`), every key once: the
generation first, then parts by name (the earliest wins). A part that cannot be read, or
whose columns do not have the types this version writes, is reported and its rows are
misses: rescored, never wrong; so are a generation's data files of other types, and an index
that cannot be read is rebuilt from the data files. A store that refuses an append (full)
costs the cache, never the night.
"""

from __future__ import annotations

import base64
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...logs import LOG
from ...redact import redact
from ...scoring.config import ScoreConfig
from ...scoring.schema import ROUND_SCHEMA, result_schema
from ..storage import filesystem, join, list_files, read_json
from .keys import KEY, as_numpy, file_keys

VERSION = "v1"
PART_BOUND = 64  # parts a namespace holds before the night's end folds them (writer.py)
# A call of cache hits carries about this many response tokens: writing them is cheap.
HIT_CALL_TOKENS = 2_000_000


def expected_schema(score: ScoreConfig, columns: list[str]) -> pa.Schema:
    """The types a part of a namespace holds: the key and the scorer's own types."""
    types = {f.name: f for f in (*result_schema(score.windows), *ROUND_SCHEMA)}
    return pa.schema([pa.field(KEY, pa.binary(16)), *(types[c] for c in columns)])


def schema_text(schema: pa.Schema) -> str:
    """A schema as settings.json declares it (Arrow's own serialization, base64)."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def declared_schema(ns: str) -> pa.Schema | None:
    """The schema the namespace's settings.json declares; None when it declares none (a
    namespace of an older localnat) or cannot be read."""
    about = read_json(join(ns, "settings.json"))
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(about["schema"])))
    except (TypeError, KeyError, ValueError, pa.ArrowException):
        return None


@dataclass(frozen=True)
class View:
    """What a reader sees of a namespace: the latest committed generation (None before the
    first compaction), the usable parts it did not absorb, in name order, and the
    generation's data files that cannot serve (numbers into its files: their rows are
    misses)."""

    namespace: str
    generation: dict | None
    parts: list[str]
    bad_files: frozenset = frozenset()

    @property
    def sources(self) -> list[str]:
        """Where rows live, numbered as the index numbers them: data files, then parts."""
        files = [join(self.namespace, f) for f, _ in (self.generation or {}).get("files", [])]
        return files + self.parts


def view(ns: str, expected: pa.Schema | None = None) -> View:
    """The latest committed generation, then the parts it did not absorb (read after it:
    a part it absorbed may still be listed until it is deleted). With `expected`, a part or
    a generation's data file of other columns or types, or unreadable, is reported once, by
    name, and left out."""
    generation = latest_generation(ns)
    absorbed = set((generation or {}).get("absorbed", []))
    parts = [
        u
        for u in list_files(join(ns, "parts"))
        if u.endswith(".parquet") and u.rsplit("/", 1)[-1] not in absorbed
    ]
    if expected is None:
        return View(ns, generation, parts)
    bad = bad_data_files(ns, generation, expected)
    with ThreadPoolExecutor(16) as pool:
        problems = list(pool.map(lambda u: part_problem(u, expected), parts))
    for uri, problem in zip(parts, problems):
        if problem:
            what, why = problem
            LOG.warning(f"cache part {redact(uri)} {what}, its rows will be rescored ({why})")
    parts = [u for u, problem in zip(parts, problems) if not problem]
    return View(ns, generation, parts, frozenset(bad))


def bad_data_files(ns: str, generation: dict | None, expected: pa.Schema) -> set[int]:
    """The generation's data files (their numbers) that cannot serve `expected`: unreadable,
    of other types, or not holding the rows its commit says; each reported once."""
    bad = set()
    for number, (name, rows) in enumerate((generation or {}).get("files", [])):
        uri = join(ns, name)
        problem = part_problem(uri, expected, rows)
        if problem:
            LOG.warning(
                f"cache data file {redact(uri)} {problem[0]}: its rows are misses ({problem[1]})"
            )
            bad.add(number)
    return bad


def latest_generation(ns: str) -> dict | None:
    """The newest generation whose commit file is whole (a compaction killed before its
    commit left none)."""
    commits = sorted(u for u in list_files(join(ns, "generations")) if u.endswith(".json"))
    for uri in reversed(commits):
        record = read_json(uri)
        if isinstance(record, dict) and "files" in record:
            return record
    return None


def part_problem(uri: str, expected: pa.Schema, rows: int | None = None):
    """Why a part (or data file) cannot serve this version's readers, and the detail (None:
    it can). `rows`: how many rows it must hold (a data file, by its commit)."""
    try:
        fs, path = filesystem(uri)
        meta = pq.read_metadata(path, filesystem=fs)
        schema = meta.schema.to_arrow_schema()
    except Exception as err:  # noqa: BLE001 - any unreadable part: its rows are misses
        return "is unreadable", f"{type(err).__name__}: {str(err)[:200]}"
    wrong = [
        f"{f.name} is {schema.field(f.name).type if f.name in schema.names else 'missing'}"
        f" (expected {f.type})"
        for f in expected
        if f.name not in schema.names or not schema.field(f.name).type.equals(f.type)
    ]
    if wrong:
        return "does not hold this version's columns", "; ".join(wrong[:3])
    if rows is not None and meta.num_rows != rows:
        return "does not hold its rows", f"{meta.num_rows} rows, its commit says {rows}"
    return None


def index_whole(ns: str, generation: dict) -> bool:
    """Whether a generation's index reads, and holds the rows its commit says."""
    try:
        fs, path = filesystem(join(ns, generation["index"]))
        return pq.read_metadata(path, filesystem=fs).num_rows == generation["rows"]
    except Exception:  # noqa: BLE001 - any broken index
        return False


def load_index(ns: str, generation: dict | None, bad=frozenset()):
    """(keys [n] S16 sorted, file [n] int32, row [n] int64) of a generation's index, the
    entries of its `bad` data files left out. An index that cannot be read, or holds other
    than the commit's rows, is rebuilt from the data files (each holds its keys once) and
    said."""
    if not generation:
        return np.empty(0, "S16"), np.empty(0, np.int32), np.empty(0, np.int64)
    uri = join(ns, generation["index"])
    try:
        fs, path = filesystem(uri)
        table = pq.read_table(path, filesystem=fs)
        if table.num_rows != generation["rows"]:
            raise ValueError(f"{table.num_rows} rows, its commit says {generation['rows']}")
        keys = as_numpy(table.column(KEY))
        file = table.column("file").to_numpy().astype(np.int32)
        row = table.column("row").to_numpy().astype(np.int64)
    except Exception as err:  # noqa: BLE001 - any broken index: rebuilt, never a traceback
        LOG.warning(
            f"cache index {redact(uri)} cannot be read ({type(err).__name__}: "
            f"{str(err)[:200]}): rebuilt from the generation's data files"
        )
        keys, file, row = rebuilt_index(ns, generation, bad)
    keep = ~np.isin(file, list(bad))
    return keys[keep], file[keep], row[keep]


def rebuilt_index(ns: str, generation: dict, bad=frozenset()):
    """A generation's index from its data files' keys (all but `bad`), sorted."""
    keys, file, row = [], [], []
    for number, (name, _) in enumerate(generation["files"]):
        if number in bad:
            continue
        held = file_keys(join(ns, name))
        keys.append(held)
        file.append(np.full(len(held), number, np.int32))
        row.append(np.arange(len(held), dtype=np.int64))
    if not keys:
        return np.empty(0, "S16"), np.empty(0, np.int32), np.empty(0, np.int64)
    keys, file, row = np.concatenate(keys), np.concatenate(file), np.concatenate(row)
    order = np.argsort(keys, kind="stable")
    return keys[order], file[order], row[order]


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


def keys_array(keys: np.ndarray) -> pa.Array:
    """A numpy 'S16' array of keys -> Arrow fixed 16-byte binary, without a copy per key."""
    keys = np.ascontiguousarray(keys, dtype="S16")
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(keys), [None, pa.py_buffer(keys.tobytes())]
    )
