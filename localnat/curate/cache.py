"""The score cache (docs/method.md §10): a night scores only what is new.

    CACHE/v1-<settings>/settings.json                what every score below depends on
    CACHE/v1-<settings>/parts/<utc>-<uuid>.parquet   appended by runs: cache_key + scores
    CACHE/v1-<settings>/generations/g000008.json     a compaction's commit (compact.py)
    CACHE/v1-<settings>/gen/g000008/                 its data files and sorted key index
    CACHE/v1-<settings>/readers/ _lease/             runs reading it now; the compaction

`<settings>` hashes the student's identity (every file's digest and its prompt probe,
identity.py) and every setting declared to change a score; `cache_key` hashes a row's
prompt, response and given steps. A changed student or setting is another namespace:
nothing in it, nothing wrong reused.

Safe to share: runs append parts under unique names and never rewrite or delete one; a
compaction folds them into a new generation under the namespace's lease. A reader sees the
latest committed generation and the parts it did not absorb (`View`), every key once: the
generation first, then parts by name (the earliest wins). A part that cannot be read, or
whose columns do not have the types this version writes, is reported and its rows are
misses: rescored, never wrong.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
from .storage import filesystem, join, list_files, read_json, read_text, write_table, write_text

VERSION = "v1"
KEY = "cache_key"
PART_BOUND = 64  # parts a namespace holds before the night's end folds them (compact.py)
# A call of cache hits carries about this many response tokens: writing them is cheap.
HIT_CALL_TOKENS = 2_000_000


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


@dataclass(frozen=True)
class View:
    """What a reader sees of a namespace: the latest committed generation (None before the
    first compaction) and the usable parts it did not absorb, in name order."""

    namespace: str
    generation: dict | None
    parts: list[str]

    @property
    def sources(self) -> list[str]:
        """Where rows live, numbered as the index numbers them: data files, then parts."""
        files = [join(self.namespace, f) for f, _ in (self.generation or {}).get("files", [])]
        return files + self.parts


def open_namespace(
    cfg: CurateConfig,
    student: StudentIdentity,
    write: bool = True,
    columns: list[str] | None = None,
) -> tuple[str, pa.Schema]:
    """The namespace (of `columns`, see `namespace`) and the columns its rows hold; its
    settings.json written the first time. Take its `view` once registered as its reader
    (`compact.reading`)."""
    columns = columns or result_columns(cfg.score)
    ns = namespace(cfg, student, columns)
    if write and read_text(join(ns, "settings.json")) is None:
        about = {**_about(cfg, student, columns), "student": student.name}
        about["identity"] = student.record()
        write_text(join(ns, "settings.json"), redact(json.dumps(about, indent=2, default=str)))
    return ns, expected_schema(cfg, columns)


def view(ns: str, expected: pa.Schema | None = None) -> View:
    """The latest committed generation, then the parts it did not absorb (read after it:
    a part it absorbed may still be listed until it is deleted). With `expected`, a part of
    other columns or types, or unreadable, is reported once, by name, and left out."""
    generation = latest_generation(ns)
    absorbed = set((generation or {}).get("absorbed", []))
    parts = [
        u
        for u in list_files(join(ns, "parts"))
        if u.endswith(".parquet") and u.rsplit("/", 1)[-1] not in absorbed
    ]
    if expected is not None:
        with ThreadPoolExecutor(16) as pool:
            problems = list(pool.map(lambda u: part_problem(u, expected), parts))
        for uri, problem in zip(parts, problems):
            if problem:
                what, why = problem
                LOG.warning(f"cache part {redact(uri)} {what}, its rows will be rescored ({why})")
        parts = [u for u, problem in zip(parts, problems) if not problem]
    return View(ns, generation, parts)


def latest_generation(ns: str) -> dict | None:
    """The newest generation whose commit file is whole (a compaction killed before its
    commit left none)."""
    commits = sorted(u for u in list_files(join(ns, "generations")) if u.endswith(".json"))
    for uri in reversed(commits):
        record = read_json(uri)
        if isinstance(record, dict) and "files" in record:
            return record
    return None


def part_problem(uri: str, expected: pa.Schema) -> tuple[str, str] | None:
    """Why a part cannot serve this version's readers, and the detail (None: it can)."""
    try:
        fs, path = filesystem(uri)
        schema = pq.read_schema(path, filesystem=fs)
    except Exception as err:  # noqa: BLE001 - any unreadable part: its rows are misses
        return "is unreadable", f"{type(err).__name__}: {str(err)[:200]}"
    wrong = [
        f"{f.name} is {schema.field(f.name).type if f.name in schema.names else 'missing'}"
        f" (expected {f.type})"
        for f in expected
        if f.name not in schema.names or not schema.field(f.name).type.equals(f.type)
    ]
    return ("does not hold this version's columns", "; ".join(wrong[:3])) if wrong else None


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


def as_numpy(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Non-null fixed 16-byte keys -> a numpy 'S16' array (sortable, searchable)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if keys.null_count:
        keys = keys.drop_null()
    data = keys.buffers()[1]
    return np.frombuffer(data, dtype="S16", count=len(keys), offset=keys.offset * 16)


def keys_array(keys: np.ndarray) -> pa.Array:
    """A numpy 'S16' array of keys -> Arrow fixed 16-byte binary, without a copy per key."""
    keys = np.ascontiguousarray(keys, dtype="S16")
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(keys), [None, pa.py_buffer(keys.tobytes())]
    )


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
