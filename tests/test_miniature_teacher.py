"""The miniature's programmatic teacher: plain and self-checking traces (pure)."""

import random

from s1ray.miniature.problems import make_pool, self_checked, teacher_trace

LINES = ["1:3>7", "2:7>2", "3:2>5"]


def test_no_self_check_is_the_plain_chain():
    assert self_checked(LINES, random.Random(0), 0.0) == "1:3>7 2:7>2 3:2>5"


def test_full_rate_adds_a_recheck_and_a_corrected_early_stop():
    for seed in range(20):
        out = self_checked(LINES, random.Random(seed), 1.0)
        toks = out.split(" ")
        assert [t for t in toks if ":" in t and ">" in t][0] == LINES[0]
        # every step still appears, in order, and the last word is a step (the answer is unchanged)
        steps = [t for t in toks if t in LINES]
        assert sorted(set(steps), key=LINES.index) == LINES
        assert out.count("Wait") == 2
        i = toks.index("so")  # the early conclusion is the value of the step before it, then corrected
        assert toks[i - 1].rsplit(">", 1)[1] == toks[i + 1].rstrip(".") and toks[i + 2] == "Wait"
        assert toks[i + 3] in LINES


def test_traces_are_fixed_per_problem_and_rate_changes_only_the_thinking():
    pool = make_pool(200, seed=0)
    a = [teacher_trace(p, 0.3) for p in pool]
    assert a == [teacher_trace(p, 0.3) for p in pool]
    plain = [teacher_trace(p) for p in pool]
    assert [t["attempt"] for t in a] == [t["attempt"] for t in plain]
    checked = sum(t["thinking"] != q["thinking"] for t, q in zip(a, plain))
    assert 0.3 * len(pool) < checked < 0.7 * len(pool)  # each of two habits at 0.3: 1 - 0.7^2 = 0.51
    assert all("Wait" not in q["thinking"] for q in plain)
