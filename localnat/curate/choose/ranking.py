"""Teacher ranking that stops (docs/method.md §7.2): which teacher suits this student, after
as few prompts as the data allow.

    every row's prompt id, read before any scoring (its id column, else its prompt's hash)
      -> the prompts in a seeded order (a hash of seed and id: new prompts never reorder
         the others, so a longer ranking continues a shorter one)
      -> blocks of B prompts, each Pass("rank-b") into rank/bNNNN/ with all its prompts' rows
      -> after each committed block: the reduce and leaderboard over every block so far, and
         `separation`: lower bounds on the top teacher's lead over each other one
      -> stop once every bound is above 0, at --max-prompts, or when no prompt is left
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from ...logs import LOG
from ...scoring.config import ScoreConfig
from ..inputs.chunks import content_error
from ..inputs.formats import READ_CHUNK_ROWS, read_rows
from ..inputs.plan import InputPlan, hive_columns
from ..inputs.records import prompt_id
from ..run.directory import Executed, Run
from ..run.passes import rank_pass
from ..settings import Choosing, Reading
from ..signals import SIGNALS
from .reduce import Reduced, reduce

MIN_PROMPTS = 10  # matched prompts before the first test: a t bound on fewer is fragile
BLOCK_SHARE, MIN_BLOCK = 0.02, 5  # the default block: 2% of the prompts, at least 5


def ranked(
    run: Run, reading: Reading, score: ScoreConfig, choosing: Choosing
) -> tuple[Executed, Reduced, dict]:
    """Score block after block (the rows as `reading` reads them, scored by `score`) until
    the stop (`choosing`'s); the blocks' passes as one, the reduce over every block scored,
    and what the ranking did (`ranking` in the manifest)."""
    rows = row_prompts(run.plan, reading)
    done, parts = [], []

    def scored(b: int, block: list[str]) -> Reduced:
        executed = run.execute(rank_pass(score, b, block_rows(rows, block, b == 0)))
        done.append(executed)
        parts.extend(executed.parts)
        return reduce(choosing, run.dir, parts, run.student.family)

    reduced, record = rank_until_separated(rows, choosing, scored)
    return merged(done), reduced, record


def rank_until_separated(rows: pd.DataFrame, choosing: Choosing, scored) -> tuple[Reduced, dict]:
    """The stopping loop over `rows` (`prompt_rows`): `scored(b, block)` scores block b and
    returns the reduce over every block so far; after each, `separation` decides. The
    reduce at the stop and the `ranking` record."""
    blocks = prompt_blocks(rows, choosing)
    n_prompts = rows["prompt_id"].nunique()  # every prompt of the inputs (ids, not nulls)
    tests = looks(choosing, n_prompts)
    for b, block in enumerate(blocks):
        reduced = scored(b, block)
        n = sum(len(x) for x in blocks[: b + 1])
        board, signal = reduced.board, choosing.select_by
        fraction = n / max(n_prompts, 1)
        delta = choosing.rank_delta
        test = separation(
            reduced.df, board, signal=signal, delta=delta, tests=tests, fraction=fraction
        )
        LOG.info(f"ranking, block {b + 1} ({n} of {n_prompts} prompts): {_said(test)}")
        limit = choosing.max_prompts is not None and n >= choosing.max_prompts
        if test["separated"] or limit or b == len(blocks) - 1:
            stopped = "separated" if test["separated"] else "max_prompts" if limit else "all"
            break
    record = {
        "stopped": stopped,
        "prompts": n_prompts,
        "prompts_scored": n,
        "blocks": b + 1,
        "block_prompts": block_size(choosing, n_prompts),
        "tests": tests,
        "rows": len(rows),
        **test,
        "settings": ranking_settings(choosing),
    }
    return reduced, record


def ranking_settings(choosing: Choosing) -> dict:
    """What the ranking answered (its guarantee: `rank_delta`); the manifest's `choice`
    decides whether a rerun continues it."""
    keys = ("select_by", "max_prompts", "rank_block", "rank_delta", "seed")
    return {k: getattr(choosing, k) for k in keys}


def row_prompts(plan: InputPlan, reading: Reading) -> pd.DataFrame:
    """Every input row's (file_index, row_number, prompt_id): prompt_id None where the row
    has neither an id nor a prompt (the scores pass rejects it), row_number None for a file
    whose ids cannot be read (it is read whole, and rejected, with the first block)."""

    def one(item) -> list[tuple]:
        index, uri, root = item
        cols = reading.columns
        hive, wanted = hive_columns(uri, root), [cols["prompt_id"], cols["prompt"]]
        out = []
        try:
            for piece in read_rows(uri, reading.input_format, wanted, READ_CHUNK_ROWS):
                out += [
                    (index, n, None if isinstance(rec, str) else prompt_id(rec, hive, reading))
                    for n, rec in piece
                ]
        except Exception as err:  # noqa: BLE001 - its rows and reason come from the pass
            if not (content_error(err) or isinstance(err, OSError)):
                raise
            return [(index, None, None)]
        return out or [(index, None, None)]

    with ThreadPoolExecutor(8) as pool:
        found = [r for rows in pool.map(one, plan.files) for r in rows]
    return pd.DataFrame(found, columns=["file_index", "row_number", "prompt_id"])


def prompt_blocks(rows: pd.DataFrame, choosing: Choosing) -> list[list[str]]:
    """The prompts in the seeded order, in blocks of `block_size`, up to --max-prompts."""
    ids = rows["prompt_id"].dropna().unique().tolist()
    order = sorted(ids, key=lambda p: (_rank_key(choosing.seed, p), p))
    if choosing.max_prompts is not None:
        order = order[: choosing.max_prompts]
    size = block_size(choosing, len(ids))
    return [order[i : i + size] for i in range(0, len(order), size)] or [[]]


def block_rows(rows: pd.DataFrame, block: list[str], first: bool) -> dict[int, list | None]:
    """A block's rows by file (None: the whole file). The first block also holds every row
    without a prompt id and every file whose ids could not be read: their reject rows."""
    mine = rows["prompt_id"].isin(block)
    if first:
        mine |= rows["prompt_id"].isna()
    out: dict[int, list | None] = {}
    for f, numbers in rows.loc[mine].groupby("file_index")["row_number"]:
        out[int(f)] = None if numbers.isna().any() else sorted(int(n) for n in numbers)
    return out


def block_size(choosing: Choosing, n_prompts: int) -> int:
    return choosing.rank_block or max(MIN_BLOCK, math.ceil(BLOCK_SHARE * n_prompts))


def looks(choosing: Choosing, n_prompts: int) -> int:
    """The most tests a ranking can make: one per block up to --max-prompts (the union bound
    spreads --rank-delta over them)."""
    most = n_prompts if choosing.max_prompts is None else min(choosing.max_prompts, n_prompts)
    return max(1, math.ceil(most / block_size(choosing, n_prompts)))


def separation(
    df: pd.DataFrame, board: dict, *, signal: str, delta: float, tests: int, fraction: float
) -> dict:
    """Whether the top teacher by `signal` (its mean over the matched prompts, as the
    leaderboard ranks) is ahead of every other ranked teacher at confidence 1 - `delta`
    over `tests` looks: per other teacher, the lower Student-t bound on the mean over
    prompts of the paired difference (top minus other, oriented so that larger is better) at
    level delta / (tests x others), its standard error shrunk by the finite-population
    correction sqrt(1 - `fraction`) (prompts are drawn without replacement: at every prompt
    scored the ranking is the full one's). `separated` needs every bound above 0 and at
    least MIN_PROMPTS matched prompts, unless `fraction` is 1."""
    from scipy.stats import t as student_t

    spec, ranked = SIGNALS[signal], board["ranked"]
    sign = 1.0 if spec.higher_is_better else -1.0
    table = df.pivot_table(index="prompt_id", columns="teacher", values=spec.column)
    table = sign * table.reindex(columns=ranked).dropna()  # [matched prompts, teachers]
    n = len(table)
    if n == 0 or len(ranked) < 2:
        return {"top": None, "matched_prompts": n, "lead_lower_bounds": {}, "separated": False}
    top = table.mean().idxmax()
    alpha = delta / (tests * (len(ranked) - 1))
    shrink = math.sqrt(max(0.0, 1.0 - fraction))
    quantile = float(student_t.ppf(1 - alpha, n - 1)) if n > 1 else math.inf
    bounds = {}
    for other in ranked:
        if other != top:
            d = (table[top] - table[other]).to_numpy()
            se = float(np.std(d, ddof=1) / math.sqrt(n)) * shrink if n > 1 else math.inf
            bounds[other] = float(d.mean() - (quantile * se if se else 0.0))
    enough = n >= MIN_PROMPTS or fraction >= 1
    return {
        "top": top,
        "matched_prompts": n,
        "lead_lower_bounds": bounds,
        "separated": bool(enough and all(b > 0 for b in bounds.values())),
    }


def merged(passes: list[Executed]) -> Executed:
    """The blocks' passes as one: their chunks apart (keyed by block), counts summed."""
    out = Executed({})
    for b, e in enumerate(passes):
        out.chunks.update({(b, *key): body for key, body in e.chunks.items()})
        out.parts += e.parts
        out.tokens += e.tokens
        out.calls.update(e.calls)
        out.seconds += e.seconds
        for key, value in e.resumed.items():
            out.resumed[key] = out.resumed.get(key, 0) + value
    return out


def _rank_key(seed: int, prompt: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{prompt}".encode(), digest_size=8).digest()


def _said(test: dict) -> str:
    if test["top"] is None:
        return "no prompt answered by every ranked teacher yet"
    lowest = min(test["lead_lower_bounds"].values(), default=math.inf)
    verdict = "separated" if test["separated"] else "not yet separated"
    return (
        f"top {test['top']} over {test['matched_prompts']} matched prompts, its smallest lead's "
        f"lower bound {lowest:.4g}: {verdict}"
    )
