"""Render the leaderboard: teachers.md (a table a person reads) and teachers.png."""

from __future__ import annotations

import io

from .columns import SIGNALS


def markdown(board: dict, student: str) -> str:
    teachers = ordered(board)
    has_acc = any("accuracy" in board["per_teacher"][t] for t in teachers)
    lines = [
        f"# Teacher leaderboard for student `{student}`",
        "",
        f"{board['n_matched_prompts']} matched prompts (answered by every teacher) of "
        f"{board['n_prompts']}; 95% CI: seeded bootstrap over prompts "
        f"({board['bootstrap']['n']} resamples, seed {board['bootstrap']['seed']}). "
        f"Kendall tau-b between the local and global rankings: {_f(board['kendall_tau_b'])}.",
        "",
    ]
    if board.get("warning"):
        lines += [f"**Warning:** {board['warning']}", ""]
    if board.get("sample_steps"):
        lines += [f"**Sampled:** {sampled_note(board['sample_steps'])}", ""]
    if apart_note(board):
        lines += [f"**Note:** {cell(apart_note(board))}", ""]
    head = "| LN rank | teacher | local nat (95% CI) | median | GN rank | global nat (95% CI) |"
    head += " accuracy |" if has_acc else ""
    head += " responses |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for t in teachers:
        s = board["per_teacher"][t]
        ln, gn = s["local"], s["global"]
        row = (
            f"| {_r(ln['rank'])} | {cell(t)} | {_f(ln['mean'])} ({_f(ln['ci95'][0])}, "
            f"{_f(ln['ci95'][1])}) | {_f(ln['median'])} | {_r(gn['rank'])} | {_f(gn['mean'])} "
            f"({_f(gn['ci95'][0])}, {_f(gn['ci95'][1])}) |"
        )
        row += f" {_f(s.get('accuracy'), 2)} |" if has_acc else ""
        lines.append(row + f" {s['n_responses']} |")
    lines += ["", *signals_table(board, teachers), "", *correlation_table(board)]
    lines += [
        "",
        "Pairwise win rates (local naturalness, row beats column on matched prompts):",
        "",
    ]
    lines += ["| | " + " | ".join(map(cell, teachers)) + " |", "|" + "---|" * (len(teachers) + 1)]
    for t in teachers:
        wins = board["per_teacher"][t]["local"]["win_rate"]
        lines.append(
            f"| {cell(t)} | "
            + " | ".join("-" if o == t else _f(wins.get(o), 2) for o in teachers)
            + " |"
        )
    return "\n".join(lines) + "\n"


def sampled_note(fraction: float) -> str:
    return (
        f"local naturalness is estimated from a stratified sample of F = {fraction:g} of each "
        "response's steps beyond those read off the global pass (docs/method.md §5.2); the "
        "bootstrap over prompts carries that noise too. GN, rsr and entropy are exact."
    )


def signals_table(board: dict, teachers: list[str]) -> list[str]:
    """The signals besides LN and GN (one global pass gives them all), per teacher."""
    others = [k for k in SIGNALS if k not in ("local", "global")]
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
                f" {_r(s['rank'])} | {_f(s['mean'])} ({_f(s['ci95'][0])}, {_f(s['ci95'][1])}) |"
            )
        lines.append(f"| {cell(t)} |" + "".join(cells))
    return lines


def correlation_table(board: dict) -> list[str]:
    """Kendall tau-b between the signals' teacher rankings, as a matrix (1 = same order)."""
    tau = {}
    for pair in board["rank_correlation"]:
        tau[pair["a"], pair["b"]] = tau[pair["b"], pair["a"]] = pair["kendall_tau_b"]
    keys = list(SIGNALS)
    lines = [
        "Kendall tau-b between the signals' teacher rankings (each signal oriented so that "
        "better ranks first):",
        "",
        "| | " + " | ".join(keys) + " |",
        "|" + "---|" * (len(keys) + 1),
    ]
    for a in keys:
        lines.append(
            f"| {a} | " + " | ".join("1" if a == b else _f(tau[a, b]) for b in keys) + " |"
        )
    return lines


def ordered(board: dict) -> list[str]:
    """Ranked teachers by local rank, then the ones listed apart (unranked), by name."""
    rank = lambda t: board["per_teacher"][t]["local"]["rank"]  # noqa: E731
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
    """Per-teacher mean and 95% CI of every signal, side by side, teachers ordered by LN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers = ordered(board)
    fig, axes = plt.subplots(
        1, len(SIGNALS), figsize=(5 * len(SIGNALS), 0.5 * len(teachers) + 1.8), sharey=True
    )
    colors = ("tab:blue", "tab:gray", "tab:green", "tab:orange")
    for ax, (key, signal), color in zip(axes, SIGNALS.items(), colors):
        stats = [board["per_teacher"][t][key] for t in teachers]
        means = [s["mean"] if s["mean"] is not None else float("nan") for s in stats]
        lo = [m - (s["ci95"][0] if s["ci95"][0] is not None else m) for m, s in zip(means, stats)]
        hi = [(s["ci95"][1] if s["ci95"][1] is not None else m) - m for m, s in zip(means, stats)]
        y = range(len(teachers))
        ax.errorbar(means, y, xerr=[lo, hi], fmt="o", color=color, capsize=4)
        for yi, s in zip(y, stats):
            ax.annotate(
                f"#{_r(s['rank'])}",
                (means[yi], yi),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=8,
            )
        ax.set_title(signal.title)
        ax.set_xlabel(signal.axis, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(teachers)), [label(t) for t in teachers])
    axes[0].invert_yaxis()
    fig.suptitle(
        f"Teachers for student {label(student)} ({board['n_matched_prompts']} matched prompts,"
        f" 95% bootstrap CI)",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def summary_table(board: dict, manifest: dict) -> str:
    """The short end-of-run summary printed to the terminal."""
    teachers = ordered(board)
    width = max(len(t) for t in teachers)
    lines = [f"{'teacher':<{width}}  LN rank  local_nat  GN rank  global_nat  accuracy"]
    for t in teachers:
        s = board["per_teacher"][t]
        acc = s.get("accuracy")
        lines.append(
            f"{t:<{width}}  {_r(s['local']['rank']):>7}  {_f(s['local']['mean']):>9}  "
            f"{_r(s['global']['rank']):>7}  {_f(s['global']['mean']):>10}  "
            f"{'' if acc is None else f'{acc:.2f}':>8}"
        )
    c = manifest["counts"]
    lines += [f"note: {apart_note(board)}"] if apart_note(board) else []
    lines += [f"warning: {board['warning']}"] if board.get("warning") else []
    lines += (
        [f"sampled: {sampled_note(board['sample_steps'])}"] if board.get("sample_steps") else []
    )
    lines += [
        f"Kendall tau-b (LN vs GN ranking): {_f(board['kendall_tau_b'])}; "
        f"{c['matched_prompts']} matched prompts of {c['prompts']}",
        f"rows: {c['input_rows']} in = {c['scored']} scored + {c['rejected']} rejected; "
        f"{c['selected']} selected; {c['duplicates']} duplicates",
        *(
            [
                f"score cache: {c['cache_misses']} rows scored by the student, "
                f"{c['cache_hits']} reused"
            ]
            if "cache_misses" in c
            else []
        ),
        *(
            [
                f"racing: {c['race_rescored']} of {c['race_survivors']} survivors' unsampled "
                f"steps scored; prompts settled by the sample {c['prompts_settled_by_sample']}, "
                f"by the exact pass {c['prompts_settled_by_exact']}"
                + (f"; {c['race_failed']} rows failed it" if c["race_failed"] else "")
            ]
            if "race_survivors" in c
            else []
        ),
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
    lines += [
        f"outputs: {manifest['run_dir']}/ (scores/, rejects/, selected/, teachers.md, "
        "teachers.png, manifest.json)",
    ]
    return "\n".join(lines)


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
