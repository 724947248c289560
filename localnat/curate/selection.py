"""Response selection and duplicates (docs/method.md §8), and writing `selected/`: the
chosen input rows with all their original columns plus the selection's scores.

The selection itself is a pure function over the compact score columns (pandas); writing
`selected/` reads the chosen rows back from the inputs, one Ray task per input file.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .columns import SELECTED_COLUMNS, SIGNALS
from .config import CurateConfig
from .formats import read_rows
from .inputs import hive_columns
from .records import missing, stable_id
from .storage import delete, filesystem, join, list_files, write_table

READ_CHUNK_ROWS = 256
# `--select-by` choices besides `random`: the signals that rank responses
METRICS = {k: SIGNALS[k] for k in ("local", "global", "rsr")}


def duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose (prompt_id, teacher, response) repeat an earlier row, earlier by input order
    (file, then row: `source` is `uri#row` and files are numbered in URI order; without a
    `source` column, by row_id): row_id, duplicate_of."""
    if "source" in df:  # split and sorted in Arrow: no Python string per row
        where = pc.split_pattern(pa.array(df["source"]), "#", max_splits=1, reverse=True)
        keys = pa.table(
            {
                "uri": pc.list_element(where, 0),
                "row": pc.cast(pc.list_element(where, 1), pa.int64()),
            }
        )
        order = pc.sort_indices(keys, sort_keys=[("uri", "ascending"), ("row", "ascending")])
        order = order.to_numpy()
        del where, keys
    else:
        order = np.argsort(df["row_id"].to_numpy(), kind="stable")
    # two int64 columns in input order, not the frame: the reduce holds a million rows
    ids = df["row_id"].to_numpy()[order]
    _, first, inverse = np.unique(
        df["content_hash"].to_numpy()[order], return_index=True, return_inverse=True
    )
    original = ids[first][inverse]  # each row's earliest row with the same content
    dup = ids != original
    return pd.DataFrame({"row_id": ids[dup], "duplicate_of": original[dup]})


def candidates(df: pd.DataFrame, correct_only: bool) -> pd.DataFrame:
    """The rows that compete for their prompt: the correct ones under a correctness column
    (unknown correctness does not compete), else all."""
    return df[df["is_correct"].fillna(False).astype(bool)] if correct_only else df


def select(df: pd.DataFrame, by: str = "local", seed: int = 0, correct_only: bool = False):
    """One row per prompt: the candidate with the best score (the highest, or the lowest for a
    lower-is-better signal such as rsr; ties: smallest row_id).

    `by="random"` draws a seeded candidate per prompt through the same code path.
    Returns prompt_id, teacher and SELECTED_COLUMNS (row_id, every signal, n_candidates,
    selected_by, settled_by: null here).
    """
    cand = candidates(df, correct_only).copy()
    if by == "random":
        cand["_key"] = [-(stable_id(seed, r) / 2**63) for r in cand["row_id"]]
    else:
        signal = METRICS[by]
        cand["_key"] = cand[signal.column] * (1 if signal.higher_is_better else -1)
    cand = cand.sort_values(["prompt_id", "_key", "row_id"], ascending=[True, False, True])
    n = cand.groupby("prompt_id").size().rename("n_candidates")
    best = cand.drop_duplicates("prompt_id").join(n, on="prompt_id")
    best["selected_by"] = by
    best["settled_by"] = None  # set by `settle` when the choice raced
    return best[["prompt_id", "teacher", *SELECTED_COLUMNS]].reset_index(drop=True)


def race(df: pd.DataFrame, z: float = 3.0, correct_only: bool = False) -> pd.DataFrame:
    """Racing selection on sampled LN (docs/method.md §5.2): per prompt, the candidates the
    sample cannot rule out. A candidate survives when its upper bound `local_nat + z * se`
    reaches the best lower bound `max(local_nat - z * se)` of its prompt: if every interval
    covers its row's exact LN, the exact best is among the survivors (its upper bound is at
    least its exact LN, which is at least the exact LN of the row with the best lower bound).

    Returns the survivors (the input rows, same columns) plus `rescore` (the row needs the
    exact pass: se > 0) and `settled_by` per prompt: 'sample' when the sample alone decides
    (one survivor, or every survivor already exact), else 'exact'.
    """
    cand = candidates(df, correct_only)
    # a row without a score cannot win (as in `select`, which sorts it last); a prompt with
    # no scored candidate keeps them all and `select` picks by row_id as it would anyway
    scored = cand["local_nat"].notna()
    se = cand["local_nat_se"].fillna(0.0)
    lower = (cand["local_nat"] - z * se).where(scored)
    upper = (cand["local_nat"] + z * se).where(scored)
    best_lower = lower.groupby(cand["prompt_id"]).transform("max")
    keep = (upper >= best_lower) | best_lower.isna()
    out = cand[keep].copy()
    out["rescore"] = se[keep] > 0
    needs_exact = out.groupby("prompt_id")["rescore"].transform("any")
    alone = out.groupby("prompt_id")["row_id"].transform("size") == 1
    out["settled_by"] = np.where(needs_exact & ~alone, "exact", "sample")
    out.loc[out["settled_by"] == "sample", "rescore"] = False  # decided: no exact pass
    return out


def settle(survivors: pd.DataFrame, exact: pd.DataFrame) -> pd.DataFrame:
    """The racing choice: per prompt the best survivor by LN, with the exact LN (`exact`:
    row_id, local_nat) of the rows that were rescored, through `select` itself (ties:
    smallest row_id). Returns `select`'s columns (n_candidates: the survivors) plus
    `settled_by`. A survivor marked for rescoring but missing from `exact` is an error, not a
    silent sampled value."""
    rows = survivors.copy()
    todo = rows["rescore"].to_numpy()
    values = exact.set_index("row_id")["local_nat"]
    missing_rows = set(rows.loc[todo, "row_id"]) - set(values.index)
    if missing_rows:
        raise ValueError(f"no exact LN for the rescored rows {sorted(missing_rows)[:5]}")
    rows.loc[todo, "local_nat"] = values.loc[rows.loc[todo, "row_id"]].to_numpy()
    rows.loc[todo, "local_nat_se"] = 0.0
    chosen = select(rows, "local")  # survivors are already the (correct) candidates
    settled = rows.drop_duplicates("prompt_id").set_index("prompt_id")["settled_by"]
    chosen["settled_by"] = chosen["prompt_id"].map(settled).to_numpy()
    return chosen


def write_selected(files, chosen, scored, cfg: CurateConfig, run_dir: str) -> dict:
    """Read the selected rows back from the inputs with all their columns and the scores,
    one Ray task per input file, each writing selected/fNNNNNN.parquet; then bring every
    part to one schema so the directory loads as one dataset. Returns the input columns
    renamed because they carry one of our names (`row_id` -> `input_row_id`)."""
    import ray

    where = chosen.merge(scored[["row_id", "file_index", "source"]], on="row_id")
    where["_row"] = where["source"].str.rsplit("#", n=1).str[1].astype("int64")
    wanted: dict[int, pa.Table] = {}  # per file, compact: one row per selected prompt
    for file_index, rows in where.groupby("file_index"):
        wanted[int(file_index)] = pa.Table.from_pandas(
            rows[["_row", *chosen.columns]], preserve_index=False
        )
    for old in list_files(join(run_dir, "selected")):
        delete(old)
    task = ray.remote(num_cpus=1)(write_selected_part)
    parts = {
        join(run_dir, "selected", f"f{i:06d}.parquet"): task.remote(
            uri, root, wanted[i], cfg, join(run_dir, "selected", f"f{i:06d}.parquet")
        )
        for i, uri, root in files
        if i in wanted
    }
    results = dict(zip(parts, ray.get(list(parts.values()))))
    renamed = {k: v for _, r, _ in results.values() for k, v in r.items()}
    as_text = sorted({c for _, _, t in results.values() for c in t})
    schemas = {part: schema for part, (schema, _, _) in results.items()}
    if not schemas:
        return {"renamed": renamed, "as_text": as_text}
    schema, conflicting = common_schema(list(schemas.values()))
    conform = ray.remote(num_cpus=1)(conform_part)
    ray.get([conform.remote(part, schema) for part, s in schemas.items() if s != schema])
    return {"renamed": renamed, "as_text": sorted(set(as_text) | set(conflicting))}


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


def write_selected_part(uri: str, root: str, chosen: pa.Table, cfg: CurateConfig, out: str):
    """Write the input rows at the row numbers `chosen` lists (`_row`), all their columns
    plus the selection's scores, to `out`; return the part's schema and the input columns
    renamed because they carry one of our names (ours are the contract; theirs are kept as
    `input_<name>`)."""
    rows = {r.pop("_row"): r for r in chosen.to_pylist()}
    hive = hive_columns(uri, root)
    records, renamed = [], {}
    for chunk in read_rows(uri, cfg.input_format, None, READ_CHUNK_ROWS):
        for index, rec in chunk:
            if index in rows:
                s = rows[index]
                rec = {**hive, **rec}
                if missing(rec.get(cfg.prompt_id_column)):
                    rec[cfg.prompt_id_column] = s["prompt_id"]
                for name in SELECTED_COLUMNS:
                    if name in rec:
                        new = _free_name(f"input_{name}", rec)
                        rec[new] = rec.pop(name)
                        renamed[name] = new
                records.append({**rec, **{c: s[c] for c in SELECTED_COLUMNS}})
    table, as_text = _table(records)
    write_table(table, out)
    return table.schema, renamed, as_text


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


def conform_part(uri: str, schema: pa.Schema) -> None:
    """Rewrite a part with the columns and types of `schema` (missing columns as nulls)."""
    fs, path = filesystem(uri)
    table = pq.read_table(path, filesystem=fs)
    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    columns = []
    for field in schema:
        column = table.column(field.name)
        if column.type != field.type and pa.types.is_string(field.type):
            column = pa.array([_text(v) for v in column.to_pylist()], pa.string())
        columns.append(column.cast(field.type))
    write_table(pa.table(columns, schema=schema), uri)
