import numpy as np
import pytest

from localnat.scoring.config import ScoreConfig
from localnat.scoring.windows import Window, plan_windows

BOUNDS = np.array([0, 5, 9, 20, 22, 30, 41])  # 6 steps


def covered(pieces, b, c):
    """Targets of a step's pieces, in order, exactly once."""
    return [t for _, s, e in pieces for t in range(s, e)] == list(range(b, c))


@pytest.mark.parametrize("window", [Window(k=10), Window(w=1.0)])
def test_every_window_sees_all_previous_steps(window):
    plan = plan_windows(BOUNDS, 7, (window,), 1000, 1000)
    assert plan.segments == {0: (0, 41)}  # all windows start at 0: one forward, the head
    assert [p for p in plan.pieces[0]] == [[(0, BOUNDS[i], BOUNDS[i + 1])] for i in range(6)]


def test_fixed_k_windows_and_shared_starts():
    plan = plan_windows(BOUNDS, 7, (Window(k=2), Window(w=0.5)), 1000, 1000)
    # k=2: step 4 (tokens 20:22) sees steps 2..3 -> context from token 5
    assert plan.pieces[0][3] == [(5, 20, 22)]
    # w=0.5: step 4 sees ceil(1.5)=2 steps, step 5 ceil(2)=2, step 6 ceil(2.5)=3 -> starts 5, 9, 9
    assert [p[0][0] for p in plan.pieces[1][3:]] == [5, 9, 9]
    # pieces sharing a start share one segment covering all their targets
    assert plan.segments[9] == (22, 41)
    # start 5 serves k=2 step 4 (20:22) and w=0.5 step 3 (ceil(1) = 1 step back, 9:20)
    assert plan.segments[5] == (9, 22)
    assert not plan.window_truncated and not plan.global_truncated


def test_long_window_drops_context_from_the_left():
    plan = plan_windows(BOUNDS, 7, (Window(k=4),), 1000, 7 + 12)  # room: 12 response tokens
    assert plan.window_truncated
    assert plan.pieces[0][5] == [(30 - 1, 30, 41)]  # step of 11 tokens keeps 1 of context
    for i, step in enumerate(plan.pieces[0]):
        assert covered(step, BOUNDS[i], BOUNDS[i + 1])
        assert all(c - a <= 12 for a, _, c in step)


def test_step_longer_than_the_window_is_chunked():
    plan = plan_windows(BOUNDS, 7, (Window(k=4),), 1000, 7 + 6)  # room 6 < step of 11
    step6 = plan.pieces[0][5]
    assert len(step6) > 1 and covered(step6, 30, 41)
    assert all(c - a <= 6 for a, _, c in step6)
    assert all(b - a >= 1 for a, b, _ in step6)  # every chunk keeps some context


def test_global_truncation_and_prompt_too_long():
    plan = plan_windows(BOUNDS, 7, (Window(k=4),), 7 + 25, 7 + 25)
    assert plan.global_truncated and plan.n_keep == 25
    with pytest.raises(ValueError, match="no room"):
        plan_windows(BOUNDS, 40, (Window(k=4),), 1000, 40)


def test_window_parsing_and_names():
    assert [Window.parse(v).name for v in (4, "4", "k2", 0.25, "0.25", "w0.125", 1.0)] == [
        "k4",
        "k4",
        "k2",
        "w25",
        "w25",
        "w12_5",
        "w100",
    ]
    for bad in (0, -1, 1.5, "abc", "w2", True):
        with pytest.raises(ValueError):
            Window.parse(bad)
    with pytest.raises(ValueError, match="duplicate"):
        ScoreConfig(windows=(4, "k4"))
    with pytest.raises(ValueError, match="segmenter"):
        ScoreConfig(segmenter="words")


def test_a_plan_cut_to_some_steps_keeps_the_head_only_as_far_as_they_read_it():
    from localnat.scoring.windows import global_only, restrict

    plan = plan_windows(BOUNDS, 7, (Window(k=2),), 1000, 1000)
    steps = len(BOUNDS) - 1
    first = np.zeros(steps, bool)
    first[1] = True  # step 2 (tokens 5:9) reads from context 0
    cut = restrict(plan, [first], global_pass=False)
    assert cut.segments == {0: (5, 9)} and not cut.global_pass
    last = np.zeros(steps, bool)
    last[-1] = True  # step 6 reads from step 4's start on: no head
    assert 0 not in restrict(plan, [last], global_pass=False).segments
    assert restrict(plan, [last]).global_pass
    assert global_only(plan).segments == {} and global_only(plan).global_pass
