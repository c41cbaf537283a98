"""The sweep's plots render from metric points (pure; matplotlib's Agg backend, no Ray)."""

from s1ray.eval import metrics
from s1ray.eval.plots import plot_accuracy_vs_thinking, plot_voting_vs_forcing


def _samples():
    seq = [{"dataset": "d", "method": "budget_forcing", "budget": str(b), "id": f"q{q}", "correct": q < b // 8,
            "thinking_tokens": b, "answer_tokens": 2, "max_thinking_tokens": b, "mode": "seq"}
           for b in (8, 16, 32) for q in range(4)]
    vote = [{"dataset": "d", "method": "budget_forcing", "budget": "8", "id": f"q{q}", "sample": i, "extracted": "1",
             "gold": "1", "thinking_tokens": 8, "answer_tokens": 1, "mode": "vote"} for q in range(4) for i in range(2)]
    return seq + vote


def test_both_plots_render_with_data_and_without(tmp_path):
    s = _samples()
    points, votes = metrics.budget_points(s), metrics.voting_curve(s, [1, 2])
    for path in (plot_accuracy_vs_thinking(points, tmp_path / "a.png", title="t"),
                 plot_voting_vs_forcing(points, votes, tmp_path / "v.png", title="t"),
                 plot_accuracy_vs_thinking([], tmp_path / "empty.png")):
        assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
