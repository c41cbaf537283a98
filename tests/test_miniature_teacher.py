"""The miniature's programmatic teacher: plain and self-checking traces (pure)."""

import random
import re

from s1ray.miniature.problems import make_pool, self_checked, teacher_trace

LINES = ["1:3>7", "2:7>2", "3:2>5"]
STEP = re.compile(r"\d+:\d+>\d+")


def test_no_self_check_is_the_plain_chain():
    assert self_checked(LINES, random.Random(0), 0.0) == "1:3>7 2:7>2 3:2>5"


def test_full_rate_adds_a_recheck_and_a_corrected_early_stop():
    for seed in range(20):
        out = self_checked(LINES, random.Random(seed), 1.0)
        steps = STEP.findall(out)
        assert steps[0] == LINES[0] and steps[-1] == LINES[-1]  # the chain ends where the plain one does
        assert [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]] == LINES  # one step repeated
        assert len(steps) == len(LINES) + 1
        assert out.count("\nWait ") == 2  # "Wait" opens a line, as budget forcing appends it
        recheck = re.search(r"(\d+:\d+>\d+)\nWait (\d+:\d+>\d+)", out)
        assert recheck and recheck.group(1) == recheck.group(2)
        early = re.search(r"\d+:\d+>(\d+) so (\d+)\.\nWait (\d+):", out)
        assert early and early.group(1) == early.group(2)  # the premature conclusion, then more steps


def test_traces_are_fixed_per_problem_and_rate_changes_only_the_thinking():
    pool = make_pool(200, seed=0)
    a = [teacher_trace(p, 0.3) for p in pool]
    assert a == [teacher_trace(p, 0.3) for p in pool]
    plain = [teacher_trace(p) for p in pool]
    assert [t["attempt"] for t in a] == [t["attempt"] for t in plain]
    checked = sum(t["thinking"] != q["thinking"] for t, q in zip(a, plain))
    assert 0.3 * len(pool) < checked < 0.7 * len(pool)  # each of two habits at 0.3: 1 - 0.7^2 = 0.51
    assert all("Wait" not in q["thinking"] for q in plain)
