"""What a row costs the student, in model tokens (every token the student runs: prompts and
forward segments, without padding). Two views of one cost: `row_cost`, the quick estimate that
packs rows into calls (the work of an actor call is bounded by tokens, never by rows), and
`Predictor`, the scorer's own count from a row's plan, which the dry run predicts a night
with and the manifest's `model_tokens` is held to."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from ...scoring.windows import Window
from ..settings import Calling


def row_cost(n_prompt: int, n_response: int, n_steps: int, windows: Sequence[Window]) -> int:
    """The prompt, the global pass, and each response token again as target or context of
    the windows that hold it: about k+1 times for a fixed k, w*p/2+1 for a fraction w, at
    most the number of steps p, per window setting."""
    reuse = sum(
        min(w.k + 1 if w.k is not None else w.w * n_steps / 2 + 1, n_steps) for w in windows
    )
    return int(n_prompt + n_response * (1 + reuse))


def row_costs(table: pa.Table, windows: Sequence[Window]) -> list[int]:
    """`row_cost` of each tokenized row (`prompt_ids`, `bounds`); a rejected row costs 0."""
    out = []
    prompts = table.column("prompt_ids").to_pylist()
    for prompt, bounds in zip(prompts, table.column("bounds").to_pylist()):
        out.append(
            0 if bounds is None else row_cost(len(prompt), bounds[-1], len(bounds) - 1, windows)
        )
    return out


class Predictor:
    """The model tokens the scores pass would run, from the student's tokenizer (not its
    weights) and the scorer's own accounting: rows packed into calls as the reading stage
    packs them (`row_cost`, `--call-tokens`), each call's rows planned (`plan_row`), batched
    (`make_batches`) and counted (`call_cost`) as an actor does."""

    def __init__(self, calling: Calling, student):
        from transformers import AutoConfig

        from ...scoring.api import resolved
        from ...scoring.prepare import Preparer
        from ...scoring.student import context_length, load_tokenizer
        from .identity import checked_load

        score = student.pinned(calling.score)
        tokenizer = checked_load(student, lambda: load_tokenizer(score))
        config = AutoConfig.from_pretrained(
            score.student, revision=score.revision, trust_remote_code=score.trust_remote_code
        )
        self.score = resolved(score, context_length(config), calling.gpus_per_actor > 0)
        self.prepare = Preparer(tokenizer, self.score)
        self.call_tokens, self.max_response = calling.call_tokens, calling.max_response_tokens

    def group(self, rows: list[dict]) -> int:
        """Model tokens of one group of files' valid rows (prompt, response, steps), in
        order: the calls the reading stage would make of them, each as an actor runs it."""
        items = [self.prepare(r["prompt"], r["response"], r["steps"]) for r in rows]
        total, call, held = 0, [], 0
        for item in items:
            cost = self._cost(item)
            if call and held + cost > self.call_tokens:
                total += self.call(call)
                call, held = [], 0
            call.append(item)
            held += cost
        return total + (self.call(call) if call else 0)

    def call(self, items) -> int:
        from ...scoring.api import plan_row, plan_segments
        from ...scoring.batching import call_cost, make_batches

        plans = {}
        for r, item in enumerate(items):
            if self._cost(item):
                try:
                    plans[r], _ = plan_row(item, self.score)
                except ValueError:  # no room: the row is rejected
                    continue
        batches = make_batches(plan_segments(items, plans, True), self.score.batch_tokens)
        return call_cost(batches)[0]

    def row(self, row: dict) -> tuple[int, int]:
        """(one row's segment tokens, its prompt's tokens): a sample's view of the cost,
        its prompt not yet shared with others."""
        from ...scoring.api import plan_row

        item = self.prepare(row["prompt"], row["response"], row["steps"])
        if not self._cost(item):
            return 0, 0
        try:
            plan, _ = plan_row(item, self.score)
        except ValueError:
            return 0, 0
        return plan.tokens, len(item.prompt_ids)

    def _cost(self, item) -> int:
        """`row_cost` of a prepared row, 0 for one the reading stage rejects."""
        if item.error or (self.max_response and len(item.response_ids) > self.max_response):
            return 0
        bounds = item.bounds
        return row_cost(len(item.prompt_ids), int(bounds[-1]), len(bounds) - 1, self.score.windows)
