"""teachers.md and teachers.png, whatever the teachers are called."""

from itertools import combinations

from localnat.curate.choose.leaderboard import leaderboard
from localnat.curate.report.render import markdown, png
from localnat.curate.signals import SIGNALS
from localnat.testing.jobs import SIGNAL_ROWS
from localnat.testing.jobs import score_table as table


def board(teachers):
    stats = lambda r, m: {  # noqa: E731
        "mean": m,
        "ci95": [m - 0.1, m + 0.1],
        "median": m,
        "rank": r,
        "win_rate": {o: 0.5 for o in teachers if o != teachers[r - 1]},
    }
    return {
        "teachers": teachers,
        "n_prompts": 3,
        "n_matched_prompts": 2,
        "kendall_tau_b": 1.0,
        "rank_correlation": [
            {"a": a, "b": b, "kendall_tau_b": 1.0} for a, b in combinations(SIGNALS, 2)
        ],
        "bootstrap": {"n": 10, "seed": 0},
        "warning": None,
        "per_teacher": {
            t: {
                **{key: stats(i + 1, -1.0 - i + k) for k, key in enumerate(SIGNALS)},
                "n_responses": 2,
                "accuracy": 0.5,
            }
            for i, t in enumerate(teachers)
        },
    }


def test_markdown_report_is_a_table_even_with_odd_teacher_names():
    teachers = ["plain", "with | pipe", "two\nlines", "$\\foo{$"]
    text = markdown(board(teachers), "student-x")
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert rows and rows[0].count("|") == 9  # 8 columns: the name's pipe is escaped
    assert "with \\| pipe" in text and "two lines" in text
    assert "| 2 | with \\| pipe | -2.000 (-2.100, -1.900) | -2.000 | 2 |" in text
    assert "2 matched prompts" in text and "student-x" in text


def test_png_report_renders_odd_teacher_names():
    data = png(board(["plain", "$\\foo{$", "a_b^c"]), "student $x$")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_reports_show_every_signal_and_the_correlations():
    from localnat.curate.report.render import markdown, png

    board = leaderboard(table(SIGNAL_ROWS), seed=0, n_boot=100)
    text = markdown(board, "x")
    assert "| C | 1 | 1.000 (1.000, 1.000) | 3 | 3.000 (3.000, 3.000) |" in text
    assert "| local | 1 | 1.000 | -1.000 | 1.000 |" in text
    assert "| rsr | -1.000 | -1.000 | 1 | -1.000 |" in text
    assert png(board, "x")[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Sampled" not in text
    sampled = markdown({**board, "sample_steps": 0.2}, "x")
    assert "sample of F = 0.2 " in sampled
    assert "the global pass's step means as its control" in sampled  # every signal: it ran


def test_reports_say_which_signals_were_computed_and_show_only_those():
    from localnat.curate.report.render import summary_table

    df = table(SIGNAL_ROWS)
    for name in ("rsr", "global_entropy", "global_nat", "global_nofirst"):
        df[name] = float("nan")  # what `--signals local` leaves null
    lb = leaderboard(df, n_boot=20, signals=("local",))
    assert lb["signals_computed"] == ["local", "length"]
    # LN alone ran no whole global pass: a sampled LN has no control
    assert "as its control" not in markdown({**lb, "sample_steps": 0.2}, "s")
    assert lb["kendall_tau_b"] is None and {"local", "length"} == set(lb["per_teacher"]["A"]) & {
        *SIGNALS
    }
    md = markdown(lb, "s")
    assert "signals computed: local, length (not asked for: global, rsr" in md
    assert "rsr rank" not in md and png(lb, "s").startswith(b"\x89PNG")
    manifest = {
        "counts": {k: 0 for k in ("input_rows", "scored", "rejected", "selected", "duplicates")}
        | {"matched_prompts": 2, "prompts": 2},
        "throughput": {"response_tokens_per_s": None},
        "run_dir": "r",
    }
    assert "note: signals computed: local, length" in summary_table(lb, manifest)
    df = table(SIGNAL_ROWS)
    for name in ("local_nat", "local_nofirst"):
        df[name] = float("nan")  # `--signals global`
    lb = leaderboard(df, n_boot=20, signals=("global",))
    assert [lb["per_teacher"][t]["global"]["rank"] for t in "ABC"] == [1, 2, 3]
    md = markdown(lb, "s")  # ordered by GN, LN shown as not computed
    assert md.index("| - | A | n/a") < md.index("| - | B | n/a") < md.index("| - | C | n/a")
