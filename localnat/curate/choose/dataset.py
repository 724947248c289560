"""Writing `selected/`: the chosen input rows read back from the inputs, with all their
original columns plus the selection's scores and the row as a chat (`messages`), a part per
input file or group of small files, by Ray tasks, each committed by its marker; then every
part brought to one schema so the directory loads as one dataset."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ...redact import redact
from ..inputs.formats import READ_CHUNK_ROWS, read_rows
from ..inputs.plan import file_groups, hive_columns
from ..inputs.records import content, missing
from ..run.directory import Run
from ..run.nodes import check_this_node_sees
from ..run.outputs import commit_selected, committed_selected, write
from ..run.progress import unwrapped
from ..run.resume import InputChanged
from ..settings import Reading
from ..signals import SELECTED_COLUMNS
from ..storage import join, read_parquet_files, read_parquet_schema
from .reduce import Reduced


def write_selected(run: Run, chosen, reduced: Reduced) -> dict:
    """Read the selected rows back from the inputs with all their columns and the scores,
    one part per group of input files (`file_groups`: a file of its own unless it is small;
    10,000 small files are not 10,000 parts), selected/fNNNNNN.parquet named by the group's
    first file, by Ray tasks (TASKS of them at most); then bring every part to one schema
    so the directory loads as one dataset. A row read back must be the row scored (its
    content hash and prompt text's hash), else the run stops naming the file (InputChanged).

    A committed stage: a part's marker (`_selected/`, outputs.py) holds the digest of what
    it was written from (its rows, their scores, the settings, localnat's version), so a run
    killed while writing, or asked to choose again, writes only the parts whose rows
    changed. Returns the input columns renamed because they carry one of our names
    (`row_id` -> `input_row_id`), those written as text, and the parts written and resumed."""
    settings = (run.cfg.reading, run.cfg.score.system_prompt)  # what rows are read back with
    groups = _groups(run.plan, _wanted(chosen, reduced))
    digests = {name: _digest(group, settings) for name, group in groups.items()}
    markers = committed_selected(run.dir, digests)
    resumed = set(markers)
    todo = [(name, groups[name], digests[name]) for name in groups if name not in resumed]
    markers |= dict(_in_tasks(_write_parts, todo, (run.dir, *settings), run.seen))
    originals = {name: _schema(m["schema"]) for name, m in markers.items()}
    schema, conflicting = common_schema(list(originals.values()))
    # a resumed part may have been conformed to another run's schema: its footer says
    checks = [
        (name, originals[name], schema)
        for name in sorted(markers)
        if name in resumed or not originals[name].equals(schema)
    ]
    stale = _in_tasks(_conform_parts, checks, run.dir, run.seen)
    if stale:  # conformed to a schema these parts no longer share: written again
        again = [(name, groups[name], digests[name]) for name in stale]
        _in_tasks(_write_parts, again, (run.dir, *settings), run.seen)
        checks = [(n, originals[n], schema) for n in stale if not originals[n].equals(schema)]
        _in_tasks(_conform_parts, checks, run.dir, run.seen)
    return {
        "renamed": {k: v for m in markers.values() for k, v in m["renamed"].items()},
        "as_text": sorted({c for m in markers.values() for c in m["as_text"]} | set(conflicting)),
        "parts_written": len(todo),
        "parts_resumed": len(resumed),
    }


def _wanted(chosen, reduced: Reduced) -> dict[int, pa.Table]:
    """Per input file, the chosen rows: their row number, content and prompt hashes (what
    a row read back must match) and the choice's columns."""
    if chosen.empty:
        return {}
    scored = reduced.df[["row_id", "file_index", "row_number", "content_hash", "prompt_key"]]
    where = chosen.merge(scored, on="row_id")
    where["prompt_key"] = reduced.prompt_keys[where["prompt_key"].to_numpy()]
    where = where.rename(
        columns={"row_number": "_row", "content_hash": "_content", "prompt_key": "_prompt"}
    )
    wanted = {}
    for file_index, rows in where.groupby("file_index"):
        wanted[int(file_index)] = pa.Table.from_pandas(
            rows[["_row", "_content", "_prompt", *chosen.columns]], preserve_index=False
        ).replace_schema_metadata(None)
    return wanted


def _groups(inputs, wanted: dict[int, pa.Table]) -> dict[str, list]:
    """selected/'s part name -> the files it holds rows of: [(index, uri, root, rows)]."""
    files = [(i, uri, root, wanted[i]) for i, uri, root in inputs.files if i in wanted]
    groups = [files[g] for g in file_groups([inputs.sizes.get(f[0]) for f in files])]
    return {f"f{group[0][0]:06d}.parquet": group for group in groups}


def _digest(group: list, settings: tuple) -> str:
    """What a part is written from: its files, their chosen rows with the choice's columns,
    the settings rows are read back with, and the code that writes it (`code`)."""
    h = hashlib.blake2b(repr((code(), settings)).encode(), digest_size=16)
    for i, uri, root, rows in group:
        h.update(repr((i, uri, root, rows.schema.to_string())).encode())
        # by value: Arrow's buffers may differ in bytes no value depends on
        h.update(pd.util.hash_pandas_object(rows.to_pandas(), index=False).to_numpy().tobytes())
    return h.hexdigest()


@cache
def code() -> str:
    """The digest of the source that turns chosen rows into a part: this module, reading
    rows back (formats, plan, records) and writing them (outputs). Its bytes, not a version
    number: an upgrade, or a checkout between releases, that changes any of them writes the
    parts again (selected/ costs no student token)."""
    h = hashlib.blake2b(digest_size=16)
    for used in (_write_parts, read_rows, hive_columns, content, write):
        h.update(Path(sys.modules[used.__module__].__file__).read_bytes())
    return h.hexdigest()


def _schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


TASKS = 32  # Ray tasks writing selected/ at most: a task's overhead is paid per batch


def _in_tasks(fn, jobs: list, settings, seen: dict) -> list:
    """`fn(batch, settings)` over `jobs` in at most TASKS Ray tasks, each on a node that sees
    the run's directory (`seen`, `Run.seen`); the results in job order."""
    if not jobs:
        return []
    import ray

    size = max(1, -(-len(jobs) // TASKS))
    task = ray.remote(num_cpus=1)(_where_seen)
    refs = [task.remote(fn, jobs[k : k + size], settings, seen) for k in range(0, len(jobs), size)]
    try:
        return [r for batch in ray.get(refs) for r in batch]
    except Exception as err:
        if unwrapped(err) is not err:
            raise unwrapped(err) from None  # ours says what is wrong, in a line
        raise


def _where_seen(fn, batch: list, settings, seen: dict) -> list:
    check_this_node_sees(seen)  # a node that joined after the passes checked every node
    return fn(batch, settings)


def _write_parts(jobs: list, settings: tuple[str, Reading, str | None]) -> list:
    """A part per group of files, then its marker: [(part name, marker)]."""
    run_dir, *reading = settings
    out = []
    for name, files, digest in jobs:
        records, renamed = [], {}
        for _, uri, root, chosen in files:
            mine, names = selected_records(uri, root, chosen, *reading)
            records += mine
            renamed |= names
        table, as_text = _table(records)
        part = write(run_dir, f"selected/{name}", table)
        schema = read_parquet_schema(part).serialize().to_pybytes()  # as stored
        marker = {
            "digest": digest,
            "rows": table.num_rows,
            "schema": base64.b64encode(schema).decode(),
            "renamed": renamed,
            "as_text": as_text,
        }
        commit_selected(run_dir, name, marker)
        out.append((name, marker))
    return out


def _conform_parts(jobs: list, run_dir: str) -> list:
    """Each part in the common schema: rewritten from its schema as written; left when it
    is in the common schema already. The parts in neither (conformed to another): stale."""
    stale = []
    for name, original, schema in jobs:
        part = join(run_dir, "selected", name)
        stored = read_parquet_schema(part)
        if stored.equals(schema):
            continue
        if not stored.equals(original):
            stale.append(name)
            continue
        write(run_dir, f"selected/{name}", conformed(read_parquet_files([part]), schema))
    return stale


def common_schema(schemas: list[pa.Schema]) -> tuple[pa.Schema, list[str]]:
    """One schema for all parts: each column's types promoted where Arrow can (int + float,
    null + anything), else the column as text (a passthrough column that is an int in one
    file and a string in another). Returns the schema and the columns made text."""
    types: dict[str, list] = {}
    for schema in schemas:
        for f in schema:
            types.setdefault(f.name, []).append(f.type)
    fields, as_text = [], []
    for name, kinds in types.items():
        try:
            one = [pa.schema([(name, k)]) for k in kinds]
            fields.append(pa.unify_schemas(one, promote_options="permissive").field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            fields.append(pa.field(name, pa.string()))
            as_text.append(name)
    return pa.schema(fields), as_text


# Ours in selected/: the scores and the row as a conversation, the column SFT trainers
# (TRL, axolotl, LLaMA-Factory) read; an input column of one of these names is kept renamed.
OURS = [*SELECTED_COLUMNS, "messages"]


def messages(prompt: str, response: str, system: str | None) -> list[dict]:
    """The row as a chat: [system,] user (the prompt, verbatim), assistant (the response,
    verbatim): the turns the student was scored on (--system-prompt: the system turn it was
    scored with; an empty one is none, as for the scorer's `encode_prompt`)."""
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": response},
    ]


def selected_records(uri: str, root: str, chosen: pa.Table, reading: Reading, system: str | None):
    """The input rows at the row numbers `chosen` lists (`_row`), all their columns plus the
    selection's scores and the row as `messages`, as records; and the input columns renamed
    because they carry one of our names (ours are the contract; theirs are kept as
    `input_<name>`). A row whose content
    is not what was scored (`_content`, `_prompt`), or that is gone, raises InputChanged."""
    rows = {r.pop("_row"): r for r in chosen.to_pylist()}
    hive, cols = hive_columns(uri, root), reading.columns
    records, renamed = [], {}
    for chunk in read_rows(uri, reading.input_format, None, READ_CHUNK_ROWS, only=rows):
        for index, rec in chunk:
            s = rows[index]
            if not isinstance(rec, dict) or content(rec, hive, reading) != (
                s.pop("_content"),
                s.pop("_prompt"),
            ):
                raise InputChanged(_changed(uri, f"row {index} is not the row it scored"))
            rec = {**hive, **rec}
            if missing(rec.get(cols["prompt_id"])):
                rec[cols["prompt_id"]] = s["prompt_id"]
            turns = messages(rec[cols["prompt"]], rec[cols["response"]], system)
            for name in OURS:
                if name in rec:
                    new = _free_name(f"input_{name}", rec)
                    rec[new] = rec.pop(name)
                    renamed[name] = new
            records.append({**rec, **{c: s[c] for c in SELECTED_COLUMNS}, "messages": turns})
    if len(records) < len(rows):
        raise InputChanged(_changed(uri, f"{len(rows) - len(records)} rows it scored are gone"))
    return records, renamed


def _changed(uri: str, what: str) -> str:
    return (
        f"input {redact(uri)} changed since the run read it ({what}): selected/ would hold "
        "text that was never scored; rerun with a new --run-id (or --overwrite)"
    )


def _table(records: list[dict]) -> tuple[pa.Table, list[str]]:
    """Records -> a table; a column whose values Arrow cannot put in one type (JSONL rows
    with a number here and a string there) is written as text (JSON for non-strings)."""
    names = list(dict.fromkeys(k for r in records for k in r))  # every record's keys
    columns, as_text = {}, []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
            columns[name] = pa.array([_text(v) for v in values], pa.string())
            if any(v is not None and not isinstance(v, str) for v in values):
                as_text.append(name)
    return pa.table(columns), as_text


def _text(value):
    """A value as text: JSON for non-strings; unpaired surrogates escaped, never a crash."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _free_name(name: str, rec: dict) -> str:
    while name in rec:
        name = f"input_{name}"
    return name


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A part's table with the columns and types of `schema` (missing columns as nulls)."""
    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    columns = []
    for field in schema:
        column = table.column(field.name)
        if column.type != field.type and pa.types.is_string(field.type):
            column = pa.array([_text(v) for v in column.to_pylist()], pa.string())
        columns.append(column.cast(field.type))
    return pa.table(columns, schema=schema)
