"""Tokenized rows as Arrow columns: the pack stage writes them (`Tokenize`), the Score
stage reads them back (`prepared_items`); one definition of the columns for both."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from ...scoring.config import ScoreConfig
from ...scoring.prepare import Prepared, Preparer
from ...scoring.student import load_tokenizer

# column -> Arrow type; step spans are character offsets, the rest token ids and offsets
TOKEN_COLUMNS = {
    "prompt_ids": pa.list_(pa.int32()),
    "response_ids": pa.list_(pa.int32()),
    "bounds": pa.list_(pa.int32()),
    "step_starts": pa.list_(pa.int64()),
    "step_ends": pa.list_(pa.int64()),
}


def set_reasons(table: pa.Table, reasons: list) -> pa.Table:
    """The table with its `reject_reason` column replaced."""
    at = table.schema.get_field_index("reject_reason")
    return table.set_column(at, "reject_reason", pa.array(reasons, pa.string()))


def prepared_columns(items: list[Prepared]) -> dict[str, pa.Array]:
    """Prepared items -> TOKEN_COLUMNS (null for an item with an error)."""
    cols = {name: [] for name in TOKEN_COLUMNS}
    for item in items:
        ok = item.error is None
        cols["prompt_ids"].append(item.prompt_ids.tolist() if ok else None)
        cols["response_ids"].append(item.response_ids.tolist() if ok else None)
        cols["bounds"].append(item.bounds.tolist() if ok else None)
        cols["step_starts"].append([s for s, _ in item.spans] if ok else None)
        cols["step_ends"].append([e for _, e in item.spans] if ok else None)
    return {name: pa.array(values, TOKEN_COLUMNS[name]) for name, values in cols.items()}


def prepared_items(table: pa.Table) -> list[Prepared]:
    """TOKEN_COLUMNS and `reject_reason` -> Prepared items (a rejected row: its reason)."""
    reasons = table.column("reject_reason").to_pylist()
    items = []
    for reason, row in zip(reasons, table.select(list(TOKEN_COLUMNS)).to_pylist()):
        if reason is not None:
            items.append(Prepared(error=reason))
            continue
        items.append(
            Prepared(
                np.asarray(row["prompt_ids"], dtype=np.int64),
                np.asarray(row["response_ids"], dtype=np.int64),
                np.asarray(row["bounds"], dtype=np.int64),
                list(zip(row["step_starts"], row["step_ends"])),
            )
        )
    return items


class Tokenize:
    """Tokenize once with offsets, segment, apply the token-to-step rule (docs/method.md
    §1-§3); reject responses over --max-response-tokens."""

    def __init__(self, score: ScoreConfig, max_tokens: int | None, tokenizer=None):
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(score)
        self.prepare = Preparer(tokenizer, score)
        self.max_tokens = max_tokens

    def __call__(self, table: pa.Table) -> pa.Table:
        reasons = table.column("reject_reason").to_pylist()
        items = []
        for reason, row in zip(
            reasons, table.select(["prompt", "response", "steps_json"]).to_pylist()
        ):
            item = Prepared(error=reason)
            if reason is None:
                steps = None if row["steps_json"] is None else json.loads(row["steps_json"])
                item = self.prepare(row["prompt"], row["response"], steps)
            n = len(item.response_ids) if item.error is None else 0
            if self.max_tokens is not None and n > self.max_tokens:
                item = Prepared(error=f"response has {n:,} tokens, over max-response-tokens")
            items.append(item)
        table = set_reasons(table, [item.error for item in items])
        for name, column in prepared_columns(items).items():
            table = table.append_column(name, column)
        return table
