"""The paper's metrics, tables and the sample log, on hand-computed examples (pure)."""

import json

import pytest

from s1ray.eval import metrics, tables
from s1ray.eval.samples import SampleWriter, read_samples, sample_key


# ------------------------------------------------------------------ Scaling / Control / Performance
def test_scaling_is_the_mean_slope_over_all_pairs():
    pts = [(100, 0.2), (200, 0.4), (400, 0.5)]
    # pairs: (0.4-0.2)/100 = 0.002, (0.5-0.2)/300 = 0.001, (0.5-0.4)/200 = 0.0005 -> mean 0.0035/3
    want = 100 * 1000 * (0.002 + 0.001 + 0.0005) / 3  # percentage points per 1,000 tokens
    assert metrics.scaling(pts) == pytest.approx(want)
    assert metrics.scaling(pts) == pytest.approx(116.6667, abs=1e-3)
    # Not the mean of consecutive slopes ((0.002 + 0.0005) / 2 -> 125):
    assert metrics.scaling(pts) != pytest.approx(125.0)
    # Order of the points does not matter; the unit is configurable.
    assert metrics.scaling(pts[::-1]) == pytest.approx(want)
    assert metrics.scaling(pts, per_tokens=1) == pytest.approx(want / 1000)


def test_scaling_negative_flat_and_degenerate():
    assert metrics.scaling([(100, 0.5), (300, 0.3)]) == pytest.approx(100 * 1000 * -0.2 / 200)
    assert metrics.scaling([(100, 0.5), (300, 0.5)]) == 0.0
    assert metrics.scaling([(100, 0.5)]) is None
    assert metrics.scaling([]) is None
    # Equal x: no slope, left out of the count: only (100,.2)-(200,.4) and (100,.3)-(200,.4).
    got = metrics.scaling([(100, 0.2), (100, 0.3), (200, 0.4)])
    assert got == pytest.approx(100 * 1000 * (0.002 + 0.001) / 2)
    assert metrics.scaling([(100, 0.2), (100, 0.3)]) is None


def test_control_and_performance():
    assert metrics.control([10, 16, 17, 0], (0, 16)) == 0.75
    assert metrics.control([10, 16, 17, 0], (10, 16)) == 0.5
    assert metrics.control([10**6], (0, None)) == 1.0
    assert metrics.control([], (0, 16)) is None
    assert metrics.performance([0.1, None, 0.4, 0.3]) == 0.4
    assert metrics.performance([None]) is None
    assert metrics.accuracy([True, False, True, True]) == 0.75


def _s(dataset, qid, method, budget, mx, think, correct, mode="seq", sample=0, answer_tokens=2, mn=0, **kw):
    return {"dataset": dataset, "id": qid, "mode": mode, "method": method, "budget": budget,
            "sample": sample, "min_thinking_tokens": mn, "max_thinking_tokens": mx,
            "thinking_tokens": think, "answer_tokens": answer_tokens, "correct": correct, **kw}


def hand_samples():
    S = []
    # budget_forcing: always in bounds; accuracy 1/2 at 16, 2/2 at 48
    S += [_s("d", "q1", "budget_forcing", "16", 16, 16, False), _s("d", "q2", "budget_forcing", "16", 16, 12, True)]
    S += [_s("d", "q1", "budget_forcing", "48", 48, 48, True), _s("d", "q2", "budget_forcing", "48", 48, 40, True)]
    # token_conditional: overshoots at 16 (both), one of two in bounds at 48; accuracy 1/2 then 0/2
    S += [_s("d", "q1", "token_conditional", "16", 16, 100, True),
          _s("d", "q2", "token_conditional", "16", 16, 30, False)]
    S += [_s("d", "q1", "token_conditional", "48", 48, 40, False),
          _s("d", "q2", "token_conditional", "48", 48, 60, False)]
    return S


def test_budget_points_and_method_table():
    pts = metrics.budget_points(hand_samples())
    by = {(p["method"], p["budget"]): p for p in pts}
    bf16, bf48 = by[("budget_forcing", "16")], by[("budget_forcing", "48")]
    assert bf16["accuracy"] == 0.5 and bf16["avg_thinking_tokens"] == 14 and bf16["control"] == 1.0
    assert bf48["accuracy"] == 1.0 and bf48["avg_thinking_tokens"] == 44
    assert bf48["avg_total_tokens"] == 46 and bf48["questions"] == 2
    tc16, tc48 = by[("token_conditional", "16")], by[("token_conditional", "48")]
    assert tc16["control"] == 0.0 and tc48["control"] == 0.5
    assert tc16["avg_thinking_tokens"] == 65 and tc48["avg_thinking_tokens"] == 50

    table = metrics.method_table(pts, ["budget_forcing", "token_conditional"])
    assert [r["method"] for r in table] == ["budget_forcing", "token_conditional"]
    bf, tc = table
    assert bf["control"] == 1.0 and bf["performance"] == 1.0 and bf["num_budgets"] == 2
    assert bf["scaling"] == pytest.approx(100 * 1000 * (1.0 - 0.5) / (44 - 14))
    assert tc["control"] == pytest.approx(1 / 4)  # per run: 1 of 4 in bounds
    assert tc["control_eval"] == 0.0  # per evaluation: averages 65 > 16 and 50 > 48
    # token_conditional: accuracy falls from .5 (at 65 tokens) to 0 (at 50 tokens): x sorted
    assert tc["scaling"] == pytest.approx(100 * 1000 * (0.5 - 0.0) / (65 - 50))
    assert tc["performance"] == 0.5


def test_voting_curve_hand_computed():
    eq = lambda a, b: a == b  # noqa: E731
    S = []
    # q1 (gold 7): samples 7, 3, 3 -> n=1 right, n=2 tie -> first (7) right, n=3 wrong (3 wins)
    for i, a in enumerate(["7", "3", "3"]):
        S.append(_s("d", "q1", "bf", "48", 48, 10, a == "7", mode="vote", sample=i, extracted=a, gold="7"))
    # q2 (gold 5): samples None, 5, 5 -> n=1 no answer (wrong), n=2 right, n=3 right
    for i, a in enumerate([None, "5", "5"]):
        S.append(_s("d", "q2", "bf", "48", 48, 20, a == "5", mode="vote", sample=i, extracted=a, gold="5"))
    rows = metrics.voting_curve(S[::-1], [1, 2, 3, 4], grade=eq)  # order of input must not matter
    by = {r["n"]: r for r in rows}
    assert sorted(by) == [1, 2, 3]  # no question has 4 samples
    assert by[1]["accuracy"] == 0.5 and by[2]["accuracy"] == 1.0 and by[3]["accuracy"] == 0.5
    # total tokens per question: n * (thinking + 2 answer tokens), averaged over q1 and q2
    assert by[1]["avg_total_tokens"] == (12 + 22) / 2
    assert by[3]["avg_total_tokens"] == (36 + 66) / 2
    assert by[2]["avg_thinking_tokens"] == (20 + 40) / 2
    # Sequential samples are ignored by the vote and vice versa.
    assert metrics.voting_curve(hand_samples(), [1], grade=eq) == []
    assert metrics.budget_points(S) == []


def test_voting_curve_default_grader_uses_equivalence():
    # Three different canonical answers, one vote each: the tie goes to the first ("0.5"),
    # which the default grader (math-verify) finds equal to the gold \\frac{1}{2}.
    S = [_s("d", "q", "bf", "8", 8, 1, True, mode="vote", sample=i, extracted=a, gold="\\frac{1}{2}")
         for i, a in enumerate(["0.5", "1/3", "3"])]
    assert metrics.voting_curve(S, [3])[0]["accuracy"] == 1.0
    S[0]["extracted"] = "0.4"
    assert metrics.voting_curve(S, [3])[0]["accuracy"] == 0.0


# ------------------------------------------------------------------ tables
def test_markdown_and_csv():
    pts = metrics.budget_points(hand_samples())
    rows = metrics.method_table(pts, ["budget_forcing", "token_conditional"])
    md = tables.metrics_markdown(rows, pts, title="T")
    assert "| Method | Control | Scaling | Performance |" in md
    assert "| budget_forcing | 100.0% | 1666.7 | 100.0% | 2 |" in md
    assert "| token_conditional | 25.0% |" in md
    assert "## d" in md and "### Accuracy per budget" in md
    csv = tables.csv_text(rows)
    lines = csv.strip().splitlines()
    assert lines[0].startswith("dataset,method,control,control_eval,scaling,performance")
    assert lines[1].startswith("d,budget_forcing,1.0,")
    assert tables.fmt(None, "pct") == "–" and tables.fmt(0.123, "pct") == "12.3%"


# ------------------------------------------------------------------ sample log
def test_sample_log_is_append_only_tolerant_and_deduplicated(tmp_path):
    p = tmp_path / "samples.jsonl"
    w = SampleWriter(tmp_path)
    recs = [_s("d", f"q{i}", "m", "8", 8, i, True) for i in range(3)]
    w.append(recs[:2])
    # a crash mid-write: a torn last line
    with p.open("a") as f:
        f.write('{"dataset": "d", "id": "q2", "mo')
    assert [r["id"] for r in read_samples(tmp_path)] == ["q0", "q1"]
    w2 = SampleWriter(tmp_path)  # repairs the torn tail so the next batch starts on its own line
    w2.append([recs[2], {**recs[0], "correct": False}])  # a duplicate key: the later one wins
    got = {r["id"]: r for r in read_samples(tmp_path)}
    assert sorted(got) == ["q0", "q1", "q2"] and got["q0"]["correct"] is False
    assert sample_key(recs[0]) == ("d", "q0", "seq", "m", "8", "0")
    # junk lines and records without a key are skipped
    with p.open("a") as f:
        f.write("not json\n" + json.dumps({"x": 1}) + "\n")
    assert len(read_samples(tmp_path)) == 3
    assert read_samples(tmp_path / "missing") == []
