"""The run directory's dataset card, README.md: YAML front matter first (the Hugging Face
Hub's conventions), whose `configs` point at selected/*.parquet so that
`datasets.load_dataset(RUN_DIR)` (or the Hub repository the directory is pushed to) loads
exactly the selected rows; then what a reader needs to trust them: the student and its
digest, the signal and settings that chose, the counts, the leaderboard with the validation
verdict, the localnat version and the command."""

from __future__ import annotations

import re

import yaml

from ...scoring.schema import SCORING_VERSION
from .render import cell

# The Hub's size buckets (dataset cards' `size_categories`).
_SIZES = [(1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M")]
_SIZES += [(1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B"), (float("inf"), "n>1B")]


def dataset_card(manifest: dict, leaderboard: str, command: str) -> str:
    """README.md for a complete run: `manifest` (report/manifest.py, before it is written),
    `leaderboard` (teachers.md's text), `command` (the options as flags)."""
    n = manifest["counts"]["selected"]
    front = {
        "configs": [
            {
                "config_name": config_name(manifest),
                "data_files": [{"split": "train", "path": "selected/*.parquet"}],
            }
        ],
        "pretty_name": f"localnat selection {manifest['run_id']}",
        "task_categories": ["text-generation"],
        "tags": ["localnat", "distillation", "reasoning", "sft", "local-naturalness"],
        "size_categories": [next(name for bound, name in _SIZES if n < bound)],
    }
    text = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n"
    return text + "\n".join([*_body(manifest, command), "", _demoted(leaderboard)])


def config_name(manifest: dict) -> str:
    """`selected-<when the run completed>`: `datasets` caches a local directory's data under
    its folder name and config, not under its files, so a second run of the same --run-id
    (another output, --overwrite) named `default` would load the first one's rows."""
    digits = re.sub(r"[^0-9]", "", manifest["finished_utc"])
    return f"selected-{digits[:8]}t{digits[8:14]}"


def _body(manifest: dict, command: str) -> list[str]:
    cfg, student, counts = manifest["config"], manifest["student"], manifest["counts"]
    score = cfg["score"]
    system = score["system_prompt"]
    return [
        f"# localnat selection {manifest['run_id']}",
        "",
        f"{counts['selected']} rows: for each of {counts['prompts']} prompts, the one response "
        f"its teachers gave that the student `{student['id']}` finds most natural by "
        f"`{cfg['select_by']}` ([localnat](https://arxiv.org/abs/2510.03988): Local "
        "Naturalness, the student's log-probability of each reasoning step given the prompt "
        "and a few steps before it)."
        + (" Only responses marked correct were eligible." if cfg["correct_column"] else ""),
        "",
        "Each row keeps its input columns, adds the scores (`local_nat`, `global_nat`, ...) "
        "and `messages`: the turns the student was scored on, verbatim (`system` when "
        "--system-prompt was set, `user`: the prompt, `assistant`: the response), the column "
        "SFT trainers read (TRL, axolotl, LLaMA-Factory).",
        "",
        "```python",
        "from datasets import load_dataset",
        'rows = load_dataset("path/to/this/directory", split="train")',
        "```",
        "",
        "## How these rows were chosen",
        "",
        "| | |",
        "|---|---|",
        f"| student | `{cell(student['id'])}`, digest `{student['digest']}`"
        + (f", commit `{student['commit']}`" if student.get("commit") else "")
        + " |",
        f"| signal | `{cfg['select_by']}` (signals computed: {', '.join(score['signals'])}) |",
        f"| windows | {', '.join(_window(w) for w in score['windows'])} |",
        f"| system prompt | {cell(repr(system)) if system else 'none'} |",
        f"| sampled steps | {score['sample_steps'] or 'none: exact'}"
        + (f", racing to epsilon {cfg['race_epsilon']:g}" if cfg["race_epsilon"] else "")
        + " |",
        f"| localnat | {manifest['localnat_version']} (scoring version {SCORING_VERSION}) |",
        f"| finished | {manifest['finished_utc']} |",
        "",
        "```sh",
        command,
        "```",
        "",
        "## Counts",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name.replace('_', ' ')} | {counts[name]} |" for name in _COUNTS if name in counts),
    ]


_COUNTS = ["input_rows", "scored", "rejected", "prompts", "matched_prompts", "selected"]
_COUNTS += ["duplicates", "cache_hits", "model_tokens"]


def _window(w: dict) -> str:
    return f"k={w['k']}" if w.get("k") is not None else f"w={w['w']:g}"


def _demoted(markdown: str) -> str:
    """The leaderboard's headings one level down: the card has one title."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.MULTILINE)
