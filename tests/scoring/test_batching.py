"""Token-budget batches of segments."""

import numpy as np

from localnat.scoring.batching import Segment, make_batches


def seg(i, n, group=0):
    return Segment(i, group, np.arange(3), np.arange(n), 0)


def test_make_batches_by_padded_tokens_longest_first():
    lengths = [5, 17, 3, 9, 9, 1, 30, 2]
    batches = make_batches([seg(i, n) for i, n in enumerate(lengths)], batch_tokens=20)
    keys = [s.key for b in batches for s in b]
    assert sorted(keys) == list(range(len(lengths)))  # every segment exactly once
    flat = [len(s.tokens) for b in batches for s in b]
    assert flat == sorted(lengths, reverse=True)
    for b in batches:
        padded = len(b) * len(b[0].tokens)  # padded to the first (longest) segment
        assert padded <= 20 or len(b) == 1  # over budget only alone
    # 30 | 17 (2 x 17 > 20) | 9 9 (3 x 9 > 20) | 5 3 2 1 (4 x 5 = 20)
    assert [len(b) for b in batches] == [1, 1, 2, 4]
    assert make_batches([], 20) == []


def test_the_windows_are_batched_alike_with_or_without_global_passes():
    windows = [seg(i, n) for i, n in enumerate([5, 17, 3, 9, 9, 1, 2])]
    passes = [
        Segment(100 + i, 0, np.arange(3), np.arange(n), 0, True, True)
        for i, n in enumerate([8, 40, 12])
    ]
    alone = make_batches(windows, batch_tokens=20)
    mixed = make_batches(windows + passes, batch_tokens=20)
    assert [b for b in mixed if not b[0].global_pass] == alone
    assert all(len({s.global_pass for s in b}) == 1 for b in mixed)  # never in one batch
    assert sorted(s.key for b in mixed if b[0].global_pass for s in b) == [100, 101, 102]
