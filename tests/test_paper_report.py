"""The paper in miniature's report, built from synthetic sample logs (pure)."""

import pytest

from s1ray.pipeline.paper_report import (
    build_report, data_ablation, extrapolation, findings, parallel_vs_sequential, render_markdown, wilson,
)


def seq(method, budget, qid, correct, think, cap=None, **kw):
    return {"dataset": "heldout", "method": method, "budget": str(budget), "id": qid, "correct": correct,
            "thinking_tokens": think, "answer_tokens": 2, "max_thinking_tokens": cap, "min_thinking_tokens": 0,
            "mode": "seq", **kw}


def vote(qid, sample, extracted, think, gold="1"):
    return {"dataset": "heldout", "method": "budget_forcing", "budget": "vote", "id": qid, "sample": sample,
            "extracted": extracted, "gold": gold, "thinking_tokens": think, "answer_tokens": 1, "mode": "vote"}


def test_wilson_matches_the_textbook_values():
    assert wilson(0, 0) is None
    assert wilson(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson(20, 20)[1] == 1.0


def test_methods_rows_carry_intervals_and_question_counts():
    s = [seq("budget_forcing", b, q, q < b // 8, min(b, 10), cap=b) for b in (8, 16) for q in range(4)]
    s += [seq("token_conditional", b, q, False, 30, cap=b) for b in (8, 16) for q in range(4)]
    rep = build_report(s, ["budget_forcing", "token_conditional"], [], [], [])
    bf, tc = rep["methods"]
    assert bf["method"] == "budget_forcing" and bf["control"] == 1.0 and tc["control"] == 0.0
    assert bf["performance"] == 0.5 and bf["best_budget"] == "16" and bf["n_questions"] == 4
    assert bf["performance_ci"] == wilson(2, 4)
    assert [p["budget"] for p in bf["points"]] == ["8", "16"]


def test_parallel_rows_sum_thinking_over_the_votes():
    s = [seq("budget_forcing", 4, q, True, 4, cap=4) for q in range(2)]
    s += [vote(q, i, "1" if i != 1 else "2", 3) for q in range(2) for i in range(3)]
    rows = parallel_vs_sequential(s, [1, 3])
    assert [r["mode"] for r in rows] == ["sequential", "parallel", "parallel"]
    par = {r["n"]: r for r in rows if r["mode"] == "parallel"}
    assert par[1]["total_thinking_tokens"] == 3 and par[3]["total_thinking_tokens"] == 9
    assert par[3]["accuracy"] == 1.0 and par[3]["n_questions"] == 2


def test_extrapolation_groups_by_waits_and_string():
    s = [seq("budget_forcing", "w", q, q == 0, 5 + w, budget_num_waits=w, num_waits=w, continuation=c)
         for w, c in ((0, None), (2, None), (2, "")) for q in range(2)]
    rows = extrapolation(s)
    assert [(r["waits"], r["continuation"]) for r in rows] == [(0, "Wait"), (2, "Wait"), (2, "")]
    assert rows[1]["thinking_tokens"] == 7 and rows[1]["waits_appended"] == 2
    assert rows[0]["accuracy"] == 0.5 and rows[0]["accuracy_ci"] == wilson(1, 2)


def test_findings_say_when_wait_does_not_help():
    s = [seq("budget_forcing", "w", q, w == 0, 5, budget_num_waits=w, num_waits=w) for w in (0, 1) for q in range(3)]
    rep = {"methods": [], "parallel_vs_sequential": [], "extrapolation": extrapolation(s),
           "data_ablation": data_ablation([{"selection": "s1", "n_train": 3, "samples": s[:3]}])}
    text = " ".join(findings(rep))
    assert 'Forcing "Wait" did not help' in text and "100.0% with no forced Wait, 0.0% with 1" in text
    assert "the best student is s1's" in text
    md = render_markdown({**rep, "meta": {"held-out problems": 3}}, {})
    assert "## Data selection (paper Table 2)" in md and "| s1 | 3 |" in md
