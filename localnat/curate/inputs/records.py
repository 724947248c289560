"""Validate and normalize raw input records into the job's working columns.

Every input row becomes exactly one working row: valid rows go on to scoring, bad rows carry
a `reject_reason` and their fields (stringified where they were not strings), never dropped.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import pyarrow as pa

from ...redact import redact
from ...scoring.prepare import check_text
from ..settings import Reading

WORK_SCHEMA = pa.schema(
    [
        ("row_id", pa.int64()),
        ("file_index", pa.int32()),
        ("row_number", pa.int64()),
        ("source", pa.string()),
        ("prompt_id", pa.string()),
        ("teacher", pa.string()),
        ("is_correct", pa.bool_()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("steps_json", pa.string()),
        ("content_hash", pa.int64()),
        ("prompt_key", pa.string()),
        ("reject_reason", pa.string()),
    ]
)
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def stable_id(*parts) -> int:
    """A positive int64 from the parts: stable across runs, machines and Python versions."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def row_source(shown_uri: str, row_number: int) -> str:
    """A row's `source`, for people: its file as `redact` shows it (redacted once per file:
    the secrets' environment is read per call) and the row's place."""
    return f"{shown_uri}#{row_number}"


def prompt_hash(prompt: str) -> str:
    return "p-" + hashlib.blake2b(prompt.encode(), digest_size=8).hexdigest()


def file_reject(uri: str, file_index: int, reason: str) -> pa.Table:
    """The one row an unreadable file becomes."""
    row = {name: None for name in WORK_SCHEMA.names}
    row.update(
        row_id=stable_id(uri, "file"),
        file_index=file_index,
        source=redact(uri),
        reject_reason=f"unreadable file: {redact(reason)}",
    )
    return pa.Table.from_pylist([row], schema=WORK_SCHEMA)


def normalize(rows: list, uri: str, file_index: int, hive: dict, reading: Reading) -> pa.Table:
    """(row index, record | error) pairs from `io.read_rows` -> a WORK_SCHEMA table."""
    out = []
    shown = redact(uri)
    for index, rec in rows:
        row = {
            "row_id": stable_id(uri, index),
            "file_index": file_index,
            "row_number": index,
            "source": row_source(shown, index),
        }
        if isinstance(rec, str):  # the line itself was unreadable
            out.append({**row, "reject_reason": rec})
            continue
        try:
            out.append({**row, **_fields({**hive, **rec}, reading)})
        except Exception as err:  # noqa: BLE001 - an odd value rejects its row, not the file
            out.append({**row, "reject_reason": f"unreadable row: {type(err).__name__}: {err}"})
    return pa.Table.from_pylist(out, schema=WORK_SCHEMA)


def content(rec: dict, hive: dict, reading: Reading) -> tuple[int | None, str | None]:
    """A raw record's (content_hash, prompt_key), as the scores pass computed them when it
    read the record (None for a row it would reject)."""
    row = _fields({**hive, **rec}, reading)
    return row.get("content_hash"), row.get("prompt_key")


def _fields(rec: dict, reading: Reading) -> dict:
    cols = reading.columns
    step_col = reading.step_column
    reasons, texts = [], {}
    for role in ("prompt", "response"):
        if cols[role] not in rec:
            reasons.append(f"missing field {cols[role]!r}")
            continue
        text, err = check_text(rec[cols[role]], role, reading.max_chars)
        texts[role] = text if text is not None else _show(rec[cols[role]])
        if err:
            reasons.append(err)
    teacher = rec.get(cols["teacher"])
    if teacher is None or str(teacher).strip() == "":
        reasons.append(f"teacher ({cols['teacher']!r}) is missing")
    raw_id = rec.get(cols["prompt_id"])
    pid = _prompt_id(raw_id, texts.get("prompt"))
    for role, value in (("prompt_id", raw_id), ("teacher", teacher)):
        if isinstance(value, str) and not _encodable(value):
            reasons.append(f"{role} is not valid UTF-8 (unpaired surrogate)")
    correct = None
    if "is_correct" in cols:
        try:
            correct = as_bool(rec.get(cols["is_correct"]))
        except ValueError as err:
            reasons.append(f"{cols['is_correct']!r} {err}")
    steps_json = None
    if step_col:
        if rec.get(step_col) is None:
            reasons.append(f"steps ({step_col!r}) are missing")
        else:
            steps_json = json.dumps(_plain(rec[step_col]), default=str)
    row = {
        "prompt_id": pid,
        "teacher": None if teacher is None else _show_text(str(teacher)),
        "is_correct": correct,
        "prompt": texts.get("prompt"),
        "response": texts.get("response"),
        "steps_json": steps_json,
        "reject_reason": "; ".join(reasons) or None,
    }
    if not reasons:
        row["content_hash"] = stable_id(row["prompt_id"], row["teacher"], row["response"])
        row["prompt_key"] = prompt_hash(row["prompt"])
    return row


def prompt_id(rec: dict, hive: dict, reading: Reading) -> str | None:
    """A raw record's prompt id as the scores pass computes it (its id column by value, else
    the hash of its prompt text; None when it has neither): what groups its prompt's rows
    before any row is scored."""
    rec, cols = {**hive, **rec}, reading.columns
    prompt, _ = check_text(rec.get(cols["prompt"]), "prompt", reading.max_chars)
    return _prompt_id(rec.get(cols["prompt_id"]), prompt)


def _prompt_id(value, prompt: str | None) -> str | None:
    if missing(value):  # as if the column were absent, never "nan"
        return None if prompt is None else _show_text(id_text(prompt_hash(prompt)))
    return _show_text(id_text(value))


def id_text(value) -> str:
    """A prompt id as text, by value: 1, 1.0, "1" and numpy's 1 are one id (a column of
    ints with a null is written as floats by pandas); a float that is not whole is its own
    text ("1.5"); any other value its str."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return str(int(value))
    return str(value)


def as_bool(value) -> bool | None:
    """A correctness value: true/false, yes/no, 1/0 (numbers or strings, any case), or
    null/NaN for unknown. Anything else raises ValueError: the row is rejected, never
    guessed."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value != value:  # NaN: unknown
        return None
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise ValueError(f"is {value!r}: use true/false, yes/no or 1/0")


def missing(value) -> bool:
    """None, NaN or blank: a value that is not there."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    return isinstance(value, str) and not value.strip()


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show_text(text: str) -> str:
    return text if _encodable(text) else text.encode("utf-8", "backslashreplace").decode()


def _show(value) -> str | None:
    """A printable form of a bad field for the reject row."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, str):
        return value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return json.dumps(_plain(value), default=str)[:10_000]


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
