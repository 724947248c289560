"""teachers.md and teachers.png, whatever the teachers are called."""

from itertools import combinations

from localnat.curate.columns import SIGNALS
from localnat.curate.leaderboard import leaderboard
from localnat.curate.report import markdown, png
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
    from localnat.curate.report import markdown, png

    board = leaderboard(table(SIGNAL_ROWS), seed=0, n_boot=100)
    text = markdown(board, "x")
    assert "| C | 1 | 1.000 (1.000, 1.000) | 3 | 3.000 (3.000, 3.000) |" in text
    assert "| local | 1 | 1.000 | -1.000 | 1.000 |" in text
    assert "| rsr | -1.000 | -1.000 | 1 | -1.000 |" in text
    assert png(board, "x")[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Sampled" not in text
    assert "sample of F = 0.2 " in markdown({**board, "sample_steps": 0.2}, "x")
