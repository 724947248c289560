"""Looking at a finished run without recomputing: `localnat show` and `localnat plot`."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ... import __version__
from ...logs import LOG
from ...redact import redact
from ..run.lease import holders
from ..run.outputs import committed_chunks, committed_parts, completed_files
from ..storage import filesystem, join, list_files, read_json, read_text
from .render import label, summary_table


class RunState(LookupError):
    """A directory `show` or `plot` cannot read as a complete run: the message says what it
    is and what to do, in one line."""


def run_state(run_dir: str) -> tuple[dict | None, dict]:
    """(the manifest of a complete run or None, the committed chunks of the scores pass);
    raises RunState for anything that is not a localnat run, or not one this version
    reads."""
    where = redact(run_dir)
    try:
        files = list_files(run_dir)
    except NotADirectoryError:
        raise RunState(f"{where} is a file: give the directory OUTPUT/RUN_ID of a run") from None
    if not files:
        raise RunState(f"{where} is empty or missing: give OUTPUT/RUN_ID of a localnat run")
    if read_text(join(run_dir, "_run.json")) is None:
        raise RunState(f"{where} holds files but no _run.json: it is not a localnat run directory")
    chunks = committed_chunks(run_dir, clean=False)
    text = read_text(join(run_dir, "manifest.json"))
    if text is None:
        return None, chunks
    try:
        manifest = json.loads(text)
    except ValueError:
        raise RunState(
            f"{where}/manifest.json is unreadable: rerun `localnat curate` with the same "
            "--output and --run-id to rebuild it from the committed chunks"
        ) from None
    return manifest, chunks


def _incomplete(run_dir: str, chunks: dict) -> str:
    live = holders(run_dir, "_lease")  # the lease's own rule: a killed run holds nothing
    why = (
        f"a run holds it now (host {live[0].get('host')}, pid {live[0].get('pid')}): wait for it"
        if live
        else "killed or failed: rerun `localnat curate` with the same --output and --run-id "
        "to finish it"
    )
    files = completed_files(chunks)
    return (
        f"{redact(run_dir)} is an incomplete run (no manifest.json; chunks committed: "
        f"{len(chunks)}, input files complete: {len(files)}): {why}"
    )


def show_run(run_dir: str) -> str:
    """The end-of-run summary of a complete run, read from its manifest and leaderboard."""
    manifest, chunks = run_state(run_dir)
    if manifest is None:
        raise RunState(_incomplete(run_dir, chunks))
    board = read_json(join(run_dir, "teachers.json"))
    try:
        return summary_table(board, manifest)
    except (KeyError, TypeError, AttributeError, ValueError):
        version = manifest.get("localnat_version", "an unknown version")
        raise RunState(
            f"{redact(run_dir)} was written by localnat {version}, whose report this version "
            f"({__version__}) cannot read; its outputs (scores/, selected/, teachers.md) are "
            "there as written"
        ) from None


def listed_parts(run_dir: str, sub: str) -> list[str]:
    """The Parquet parts of `sub` (scores/ or rejects/) that a marker lists: a part no
    marker lists is not an output (run/outputs.py)."""
    _, chunks = run_state(run_dir)
    return [join(run_dir, p) for p in committed_parts(chunks, sub)]


def prompt_rows(parts: list[str], prompt_id: str, columns: list[str]) -> pa.Table | None:
    """Rows of one prompt from Parquet parts, read part by part with a filter."""
    tables = []
    for uri in parts:
        fs, path = filesystem(uri)
        names = pq.read_schema(path, filesystem=fs).names
        if "prompt_id" not in names:
            continue
        table = pq.read_table(
            path,
            filesystem=fs,
            columns=[c for c in columns if c in names],
            filters=pc.field("prompt_id") == prompt_id,
        )
        if table.num_rows:
            tables.append(table)
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def plot_prompt(run_dir: str, prompt_id: str, out: str | None = None) -> str:
    """Write a PNG of per-step log-probs along each teacher's response to one prompt, local
    (each step in its window) above global (each step in the whole-response pass), with the
    selected response drawn bold. Returns the PNG's path."""
    cols = [
        "row_id",
        "teacher",
        "step_starts",
        "step_ends",
        "step_logprobs",
        "step_global_logprobs",
        "local_nat",
        "global_nat",
        "is_correct",
    ]
    manifest, chunks = run_state(run_dir)
    if manifest is None:
        LOG.warning(_incomplete(run_dir, chunks) + "; plotting its committed rows")
    rows = prompt_rows(listed_parts(run_dir, "scores/"), prompt_id, cols)
    if rows is None:
        raise LookupError(f"no scored response to prompt_id {prompt_id!r} in {redact(run_dir)}")
    selected = [u for u in list_files(join(run_dir, "selected")) if u.endswith(".parquet")]
    chosen = prompt_rows(selected if manifest else [], prompt_id, ["row_id"])
    selected = set() if chosen is None else set(chosen.column("row_id").to_pylist())
    if out is None:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", prompt_id)[:80] or "prompt"
        local = "://" not in run_dir or run_dir.startswith("file://")
        out = join(run_dir, "plots", f"{safe}.png") if local else f"{safe}.png"
    png = _render(rows.to_pylist(), selected, prompt_id)
    fs, path = filesystem(out)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(png)
    return out


def _render(rows: list[dict], selected: set, prompt_id: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    rows = sorted(rows, key=lambda r: -(r["local_nat"] if r["local_nat"] is not None else -1e9))
    colors = plt.get_cmap("tab10")
    for n, row in enumerate(rows):
        total = max(row["step_ends"][-1], 1) if row["step_ends"] else 1
        x = [(s + e) / 2 / total for s, e in zip(row["step_starts"], row["step_ends"])]
        chosen = row["row_id"] in selected
        verdict = {True: "correct", False: "incorrect"}.get(row.get("is_correct"), "unknown")
        name = f"{row['teacher']} (LN {row['local_nat']:.2f}, GN {row['global_nat']:.2f}, "
        name += f"{verdict})" + (" - selected" if chosen else "")
        style = {
            "lw": 2.6 if chosen else 1.0,
            "alpha": 1.0 if chosen else 0.6,
            "color": colors(n % 10),
            "marker": "o" if chosen else None,
            "ms": 3,
            # an incorrect answer dashed, an unknown one dotted: a higher line is not a better
            # answer when it is wrong
            "ls": {"correct": "-", "incorrect": "--"}.get(verdict, ":"),
        }
        for ax, key in ((axes[0], "step_logprobs"), (axes[1], "step_global_logprobs")):
            y = [float("nan") if v is None else v for v in (row.get(key) or [])]
            if y:
                ax.plot(x[: len(y)], y, label=label(name), **style)
    axes[0].set_title("local: each step given the prompt and its window of preceding steps")
    axes[1].set_title("global: each step given the prompt and the whole response before it")
    for ax in axes:
        ax.set_ylabel("mean log-prob of the step")
        ax.grid(alpha=0.3)
    axes[1].set_xlabel(
        "position in the response (fraction of its characters); solid: correct, dashed: "
        "incorrect, dotted: unknown"
    )
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(label(f"prompt {prompt_id}: {len(rows)} responses"), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
