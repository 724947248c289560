"""Render the leaderboard: teachers.md (a table a person reads) and teachers.png."""

from __future__ import annotations

import io

from ...scoring.config import SIGNAL_NEEDS
from ..signals import SIGNALS, number

# A signal the run did not compute (`--signals`), where a table has a column for it.
NOT_COMPUTED = {"mean": None, "ci95": [None, None], "median": None, "rank": None, "win_rate": {}}


def markdown(board: dict, student: str) -> str:
    teachers = ordered(board)
    has_acc = any("accuracy" in board["per_teacher"][t] for t in teachers)
    lines = [
        f"# Teacher leaderboard for student `{student}`",
        "",
        f"{board['n_matched_prompts']} matched prompts (answered by every teacher) of "
        f"{board['n_prompts']}; 95% CI: seeded bootstrap over prompts "
        f"({board['bootstrap']['n']} resamples, seed {board['bootstrap']['seed']}). "
        f"Kendall tau-b between the local and global rankings: {number(board['kendall_tau_b'])}.",
        "",
    ]
    if board.get("warning"):
        lines += [f"**Warning:** {board['warning']}", ""]
    if computed_note(board):
        lines += [f"**Note:** {computed_note(board)}", ""]
    if board.get("sample_steps"):
        lines += [f"**Sampled:** {sampled_note(board)}", ""]
    if apart_note(board):
        lines += [f"**Note:** {cell(apart_note(board))}", ""]
    if family_note(board):
        lines += [f"**Note:** {cell(family_note(board))}", ""]
    head = "| LN rank | teacher | local nat (95% CI) | median | GN rank | global nat (95% CI) |"
    head += " accuracy |" if has_acc else ""
    head += " responses |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for t in teachers:
        s = board["per_teacher"][t]
        ln, gn = s.get("local", NOT_COMPUTED), s.get("global", NOT_COMPUTED)
        name = cell(t) + (" [same family]" if s.get("same_family_as_student") else "")
        row = (
            f"| {_r(ln['rank'])} | {name} | {number(ln['mean'])} ({number(ln['ci95'][0])}, "
            f"{number(ln['ci95'][1])}) | {number(ln['median'])} | {_r(gn['rank'])} | "
            f"{number(gn['mean'])} ({number(gn['ci95'][0])}, {number(gn['ci95'][1])}) |"
        )
        row += f" {number(s.get('accuracy'), 2)} |" if has_acc else ""
        lines.append(row + f" {s['n_responses']} |")
    lines += ["", *signals_table(board, teachers), "", *correlation_table(board)]
    lines += validation_section(board)
    lines += [
        "",
        "Pairwise win rates (local naturalness, row beats column on matched prompts):",
        "",
    ]
    lines += ["| | " + " | ".join(map(cell, teachers)) + " |", "|" + "---|" * (len(teachers) + 1)]
    for t in teachers:
        wins = board["per_teacher"][t].get("local", NOT_COMPUTED)["win_rate"]
        lines.append(
            f"| {cell(t)} | "
            + " | ".join("-" if o == t else number(wins.get(o), 2) for o in teachers)
            + " |"
        )
    return "\n".join(lines) + "\n"


def validation_section(board: dict) -> list[str]:
    """Which signal to trust here: the verdict in words, then each signal's figures."""
    from ..choose.validation import verdict

    v = board.get("validation")
    if not v:
        return []
    lines = ["", "## Which signal to trust on this data", ""]
    lines += verdict(v, board.get("select_by", "local")) or [
        "No prompt has both a correct and an incorrect answer: nothing to tell signals apart."
    ]
    lines += [
        "",
        f"{v['informative_prompts']} informative prompts ({v['candidates']} candidates); a "
        f"random pick is correct {number(v['random_top1_accuracy'], 2)} of the time. AUC: P(a "
        "correct answer outscores an incorrect one), 0.5 = chance; each signal oriented so "
        "higher is better.",
        "",
        "| signal | AUC (95% CI) | top-1 accuracy | Spearman with length | teacher ranking vs "
        "accuracy (tau) |",
        "|---|---|---|---|---|",
    ]
    for key, s in v["signals"].items():
        lo, hi = s["auc_ci95"]
        lines.append(
            f"| {key} | {number(s['auc'], 2)} ({number(lo, 2)}, {number(hi, 2)}) | "
            f"{number(s['top1_accuracy'], 2)} | {number(s['length_spearman'], 2)} | "
            f"{number(s['teacher_tau_vs_accuracy'], 2)} |"
        )
    return lines


def family_note(board: dict) -> str | None:
    """Which teachers share the student's model family (a likelihood signal favours them)."""
    same = [t for t in board["teachers"] if board["per_teacher"][t].get("same_family_as_student")]
    if not same:
        return None
    return (
        f"{', '.join(same)} named as the student's own family ({board.get('student_family')}): "
        "the student's likelihood favours its family's text, so their ranks say less"
    )


def sampled_note(board: dict) -> str:
    """What a sampled LN is: its fraction, and whether the global pass ran whole and is its
    control (a global signal computed) or not (`--signals` without one)."""
    controlled = any(SIGNAL_NEEDS.get(name) in ("global", "ranks") for name in shown(board))
    return (
        f"local naturalness is estimated from a stratified sample of F = "
        f"{board['sample_steps']:g} of each response's steps beyond those read off the global "
        "pass"
        + (", with the global pass's step means as its control" if controlled else "")
        + " (docs/method.md §5.2); the bootstrap over prompts carries that noise too. GN, rsr "
        "and entropy are exact."
    )


def shown(board: dict) -> list[str]:
    """The signals the run computed (a board of an older run: all of them)."""
    return board.get("signals_computed") or list(SIGNALS)


def computed_note(board: dict) -> str | None:
    """Which signals were computed, when not all (`--signals`)."""
    if len(shown(board)) == len(SIGNALS):
        return None
    left = [k for k in SIGNALS if k not in shown(board)]
    return f"signals computed: {', '.join(shown(board))} (not asked for: {', '.join(left)})"


def signals_table(board: dict, teachers: list[str]) -> list[str]:
    """The signals besides LN and GN (one global pass gives them all), per teacher."""
    others = [k for k in shown(board) if k not in ("local", "global")]
    lines = [
        "Other signals of the same pass: "
        + "; ".join(f"{k}: {SIGNALS[k].title}, {SIGNALS[k].axis}" for k in others)
        + ".",
        "",
    ]
    head = "| teacher |" + "".join(f" {k} rank | {k} (95% CI) |" for k in others)
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for t in teachers:
        cells = []
        for k in others:
            s = board["per_teacher"][t][k]
            cells.append(
                f" {_r(s['rank'])} | {number(s['mean'])} ({number(s['ci95'][0])}, "
                f"{number(s['ci95'][1])}) |"
            )
        lines.append(f"| {cell(t)} |" + "".join(cells))
    return lines


def correlation_table(board: dict) -> list[str]:
    """Kendall tau-b between the signals' teacher rankings, as a matrix (1 = same order)."""
    tau = {}
    for pair in board["rank_correlation"]:
        tau[pair["a"], pair["b"]] = tau[pair["b"], pair["a"]] = pair["kendall_tau_b"]
    keys = shown(board)
    lines = [
        "Kendall tau-b between the signals' teacher rankings (each signal oriented so that "
        "better ranks first):",
        "",
        "| | " + " | ".join(keys) + " |",
        "|" + "---|" * (len(keys) + 1),
    ]
    for a in keys:
        lines.append(
            f"| {a} | " + " | ".join("1" if a == b else number(tau[a, b]) for b in keys) + " |"
        )
    return lines


def ordered(board: dict) -> list[str]:
    """Ranked teachers by local rank (global where LN was not computed), then the ones
    listed apart (unranked), by name."""
    key = next(k for k in ("local", "global", *shown(board)) if k in shown(board))
    rank = lambda t: board["per_teacher"][t][key]["rank"]  # noqa: E731
    ranked = sorted((t for t in board["teachers"] if rank(t) is not None), key=rank)
    return ranked + sorted(t for t in board["teachers"] if rank(t) is None)


def _r(rank) -> str:
    return "-" if rank is None else str(rank)


def apart_note(board: dict) -> str | None:
    """Which teachers are listed apart from the ranking, and why."""
    apart = board.get("unranked") or []
    if not apart:
        return None
    n = board["n_prompts"]
    names = ", ".join(f"{t} ({board['per_teacher'][t]['n_prompts']} of {n} prompts)" for t in apart)
    return f"not ranked, too few shared prompts (their means are over their own prompts): {names}"


def cell(text: str) -> str:
    """A teacher name as one Markdown table cell: pipes escaped, newlines flattened."""
    return " ".join(str(text).split()).replace("|", "\\|")


def label(text: str) -> str:
    """A name as plain text for matplotlib: `$` would start mathtext (and can crash it)."""
    return str(text).replace("$", r"\$")


def png(board: dict, student: str) -> bytes:
    """Per-teacher mean and 95% CI of every signal, a panel each, teachers ordered by LN;
    with a correctness column, a last panel: each signal's AUC for correct answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers = ordered(board)
    signals = {k: SIGNALS[k] for k in shown(board)}
    panels = len(signals) + (1 if board.get("validation") else 0)
    cols = min(4, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.5 * cols, rows * (0.45 * len(teachers) + 1.8)), squeeze=False
    )
    axes = axes.ravel()
    colors = plt.get_cmap("tab10")
    for n, (ax, (key, signal)) in enumerate(zip(axes, signals.items())):
        stats = [board["per_teacher"][t][key] for t in teachers]
        means = [s["mean"] if s["mean"] is not None else float("nan") for s in stats]
        lo = [m - (s["ci95"][0] if s["ci95"][0] is not None else m) for m, s in zip(means, stats)]
        hi = [(s["ci95"][1] if s["ci95"][1] is not None else m) - m for m, s in zip(means, stats)]
        y = range(len(teachers))
        ax.errorbar(means, y, xerr=[lo, hi], fmt="o", color=colors(n % 10), capsize=4)
        for yi, s in zip(y, stats):
            ax.annotate(
                f"#{_r(s['rank'])}",
                (means[yi], yi),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
            )
        ax.set_title(signal.title, fontsize=9)
        ax.set_xlabel(signal.axis, fontsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(teachers)), [label(t) for t in teachers], fontsize=7)
        ax.invert_yaxis()
    if board.get("validation"):
        _auc_panel(axes[len(signals)], board["validation"])
    for ax in axes[panels:]:
        ax.axis("off")
    fig.suptitle(
        f"Teachers for student {label(student)} ({board['n_matched_prompts']} matched prompts,"
        f" 95% bootstrap CI)",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _auc_panel(ax, validation: dict) -> None:
    """Each signal's AUC for telling correct from incorrect answers, with its CI; chance."""
    names = [k for k, v in validation["signals"].items() if v["auc"] is not None]
    aucs = [validation["signals"][k]["auc"] for k in names]
    cis = [validation["signals"][k]["auc_ci95"] for k in names]
    lo = [a - (c[0] if c[0] is not None else a) for a, c in zip(aucs, cis)]
    hi = [(c[1] if c[1] is not None else a) - a for a, c in zip(aucs, cis)]
    ax.errorbar(aucs, range(len(names)), xerr=[lo, hi], fmt="s", color="black", capsize=4)
    ax.axvline(0.5, color="tab:red", ls="--", lw=1)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(
        f"correct vs incorrect ({validation['informative_prompts']} informative prompts)",
        fontsize=9,
    )
    ax.set_xlabel("AUC: P(correct outscores incorrect); red = chance", fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def summary_table(board: dict, manifest: dict) -> str:
    """The short end-of-run summary printed to the terminal."""
    teachers = ordered(board)
    width = max(len(t) for t in teachers)
    lines = [f"{'teacher':<{width}}  LN rank  local_nat  GN rank  global_nat  accuracy"]
    for t in teachers:
        s = board["per_teacher"][t]
        ln, gn = s.get("local", NOT_COMPUTED), s.get("global", NOT_COMPUTED)
        acc = s.get("accuracy")
        lines.append(
            f"{t:<{width}}  {_r(ln['rank']):>7}  {number(ln['mean']):>9}  "
            f"{_r(gn['rank']):>7}  {number(gn['mean']):>10}  "
            f"{'' if acc is None else f'{acc:.2f}':>8}"
        )
    c = manifest["counts"]
    lines += [f"note: {apart_note(board)}"] if apart_note(board) else []
    lines += [f"note: {family_note(board)}"] if family_note(board) else []
    lines += [f"warning: {board['warning']}"] if board.get("warning") else []
    lines += [f"note: {computed_note(board)}"] if computed_note(board) else []
    lines += [f"sampled: {sampled_note(board)}"] if board.get("sample_steps") else []
    lines += [
        *_verdict_lines(board),
        f"Kendall tau-b (LN vs GN ranking): {number(board['kendall_tau_b'])}; "
        f"{c['matched_prompts']} matched prompts of {c['prompts']}",
        f"rows: {c['input_rows']} in = {c['scored']} scored + {c['rejected']} rejected; "
        f"{c['selected']} selected; {c['duplicates']} duplicates",
        *_passes_lines(manifest),
        f"throughput: {manifest['throughput']['response_tokens_per_s'] or 'n/a (none scored)'} "
        "response tokens/s",
    ]
    costly = manifest.get("most_expensive_rows") or []
    lines += (
        [
            "longest responses (tokens): "
            + ", ".join(f"{r['response_tokens']:,} ({r['teacher']})" for r in costly)
        ]
        if costly
        else []
    )
    scores = "rank/" if "ranking" in manifest else "scores/, rejects/, selected/ + README.md"
    lines += [
        f"outputs: {manifest['run_dir']}/ ({scores}, teachers.md, teachers.png, manifest.json)"
    ]
    return "\n".join(lines)


def _passes_lines(manifest: dict) -> list[str]:
    """What the cache, racing and a ranking did, when they ran."""
    c, lines = manifest["counts"], []
    if "cache_misses" in c:
        lines.append(
            f"score cache: {c['cache_misses']} rows scored by the student, {c['cache_hits']} reused"
        )
    if "race_rounds" in c:
        lines.append(
            f"racing: {c['race_rounds']} rounds over {c['race_rows_per_round']} rows; "
            f"prompts settled per round {c['prompts_settled_per_round']}"
            + (f"; {c['race_failed']} rows failed a round" if c["race_failed"] else "")
        )
    if "ranking" in manifest:
        lines.append(f"ranking: {ranking_note(manifest['ranking'])}")
    return lines


def ranking_note(ranking: dict) -> str:
    """Where a teacher ranking stopped, and why."""
    why = {
        "separated": f"{ranking['top']} is ahead of every other teacher with probability "
        f">= {1 - ranking['settings']['rank_delta']:g}",
        "max_prompts": "--max-prompts reached before the top teacher stood apart",
        "all": "every prompt scored"
        + ("" if ranking["separated"] else "; the top teacher does not stand apart"),
    }[ranking["stopped"]]
    return (
        f"{ranking['prompts_scored']} of {ranking['prompts']} prompts "
        f"({ranking['blocks']} blocks of {ranking['block_prompts']}): {why}"
    )


def _verdict_lines(board: dict) -> list[str]:
    from ..choose.validation import verdict

    return [
        f"signals: {line}"
        for line in verdict(board.get("validation"), board.get("select_by", "local"))
    ]
