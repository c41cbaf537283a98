"""The s1 paper's test-time scaling metrics (Section 3.2), pure Python.

For one method on one benchmark, a sweep gives a set A of evaluations (one per thinking budget).
Each evaluation a has an average thinking length x_a (tokens) and an accuracy f(a), which makes a
piecewise-linear curve f over x. The paper's metrics are

* **Control** = (1/|A|) sum_a 1[a_min <= a <= a_max]: how often compute stays inside the
  method's bounds. The paper applies the test to whole evaluations; s1ray applies it to every
  run (sample) by default -- stricter, since an evaluation can be in bounds on average while many
  of its runs are not -- and offers the paper's per-evaluation variant as ``control_eval``.
* **Scaling** = (1 / C(|A|, 2)) sum_{a<b} (f(b) - f(a)) / (x_b - x_a): the average slope over
  *all pairs* of points (not only consecutive ones), exactly the paper's Eq. 2. Pairs with equal
  x have no slope and are left out (and out of the count). s1ray reports the slope in accuracy
  percentage points per 1,000 thinking tokens (``SCALING_PER_TOKENS``) so numbers are readable.
* **Performance** = max_a f(a).

Parallel scaling: majority voting over the first n samples of each question, against n and
against the total tokens generated per question.

Samples are dicts as written to ``samples.jsonl`` (see :mod:`s1ray.eval.samples`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations
from typing import Any

from s1ray.engine.control import within_bounds

SCALING_PER_TOKENS = 1000


def accuracy(correct: Iterable[bool]) -> float | None:
    flags = list(correct)
    return sum(map(bool, flags)) / len(flags) if flags else None


def control(thinking_tokens: Iterable[int], bounds: tuple[int, int | None]) -> float | None:
    """Share of runs whose thinking length lies in ``bounds`` (min, max or None)."""
    runs = list(thinking_tokens)
    return sum(within_bounds(t, bounds) for t in runs) / len(runs) if runs else None


def scaling(points: Sequence[tuple[float, float]], per_tokens: float = SCALING_PER_TOKENS) -> float | None:
    """The paper's Scaling: mean slope over all pairs of (avg thinking tokens, accuracy) points.

    Accuracy is a fraction (0..1); the slope is returned in percentage points per
    ``per_tokens`` thinking tokens. None with fewer than two distinct x values.
    """
    pts = sorted(points)
    slopes = [(fb - fa) / (xb - xa) for (xa, fa), (xb, fb) in combinations(pts, 2) if xb != xa]
    if not slopes:
        return None
    return 100.0 * per_tokens * sum(slopes) / len(slopes)


def performance(accuracies: Iterable[float | None]) -> float | None:
    vals = [a for a in accuracies if a is not None]
    return max(vals) if vals else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# ------------------------------------------------------------------ per evaluation
def budget_points(samples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, method, budget) from sequential samples: accuracy, averages, Control."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in samples:
        if s.get("mode", "seq") == "seq":
            groups[(s["dataset"], s["method"], s["budget"])].append(s)
    rows = []
    for (dataset, method, budget), ss in groups.items():
        bounds = (ss[0].get("min_thinking_tokens") or 0, ss[0].get("max_thinking_tokens"))
        think = [s["thinking_tokens"] for s in ss]
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "budget": budget,
                "min_thinking_tokens": bounds[0],
                "max_thinking_tokens": bounds[1],
                "n": len(ss),
                "questions": len({s["id"] for s in ss}),
                "accuracy": accuracy(s["correct"] for s in ss),
                "avg_thinking_tokens": _mean(think),
                "avg_answer_tokens": _mean([s["answer_tokens"] for s in ss]),
                "avg_total_tokens": _mean([s["thinking_tokens"] + s["answer_tokens"] for s in ss]),
                "control": control(think, bounds),
                "in_bounds_on_average": within_bounds(round(_mean(think)), bounds),
            }
        )
    rows.sort(key=lambda r: (r["dataset"], r["method"], r["max_thinking_tokens"] or 0, r["budget"]))
    return rows


def method_table(points: Iterable[dict[str, Any]], method_order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The paper's Table 3: one row per (dataset, method) with Control, Scaling, Performance."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        groups[(p["dataset"], p["method"])].append(p)
    rank = {m: i for i, m in enumerate(method_order)}
    rows = []
    for (dataset, method), ps in groups.items():
        n_runs = sum(p["n"] for p in ps)
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "control": sum(p["control"] * p["n"] for p in ps) / n_runs if n_runs else None,
                "control_eval": sum(bool(p["in_bounds_on_average"]) for p in ps) / len(ps),
                "scaling": scaling([(p["avg_thinking_tokens"], p["accuracy"]) for p in ps]),
                "performance": performance(p["accuracy"] for p in ps),
                "num_budgets": len(ps),
                "runs": n_runs,
            }
        )
    rows.sort(key=lambda r: (r["dataset"], rank.get(r["method"], len(rank)), r["method"]))
    return rows


# ------------------------------------------------------------------ parallel scaling
def voting_curve(
    samples: Iterable[dict[str, Any]],
    n_values: Sequence[int],
    grade: Callable[[str | None, str], bool] | None = None,
) -> list[dict[str, Any]]:
    """Majority-vote accuracy over the first n samples per question, for each n.

    ``samples`` are voting-mode samples with ``sample`` indices 0..N-1, ``extracted`` answers
    and ``gold``. Only questions with at least n samples count towards n. ``total tokens`` is
    per question: thinking + answer tokens summed over the n samples, averaged over questions.
    """
    from s1ray.engine.voting import majority_vote

    if grade is None:
        from s1ray.answers import is_equivalent as grade
    by_q: dict[tuple, list[dict]] = defaultdict(list)
    for s in samples:
        if s.get("mode") == "vote":
            by_q[(s["dataset"], s["method"], s["budget"], s["id"])].append(s)
    acc: dict[tuple, list[tuple[bool, int, int]]] = defaultdict(list)
    for (dataset, method, budget, _qid), ss in by_q.items():
        ss.sort(key=lambda s: s["sample"])
        for n in n_values:
            if len(ss) < n:
                continue
            first = ss[:n]
            vote = majority_vote([s.get("extracted") for s in first])
            ok = vote.answer is not None and bool(grade(vote.answer, first[0]["gold"]))
            total = sum(s["thinking_tokens"] + s["answer_tokens"] for s in first)
            think = sum(s["thinking_tokens"] for s in first)
            acc[(dataset, method, budget, n)].append((ok, total, think))
    rows = [
        {
            "dataset": d,
            "method": m,
            "budget": b,
            "n": n,
            "questions": len(v),
            "accuracy": accuracy(ok for ok, _, _ in v),
            "avg_total_tokens": _mean([t for _, t, _ in v]),
            "avg_thinking_tokens": _mean([t for _, _, t in v]),
        }
        for (d, m, b, n), v in acc.items()
    ]
    rows.sort(key=lambda r: (r["dataset"], r["method"], r["budget"], r["n"]))
    return rows
