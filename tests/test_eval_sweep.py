"""The sweep: planning, resuming, reports and plots -- with a scripted backend (fast), and end to
end on the tiny model through a Ray engine actor (``vllm`` + ``ray``)."""

import json
import re

import numpy as np
import pytest

from s1ray.eval.config import EvalConfig
from s1ray.eval.report import summary
from s1ray.eval.samples import SAMPLES_FILE
from s1ray.eval.sweep import run_sweep


def check_png(path, min_size=(200, 300)):
    """Open the PNG and check it is a real, non-blank image of a sane size."""
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    h, w = img.shape[:2]
    assert h >= min_size[0] and w >= min_size[1] and h < 5000 and w < 10000, img.shape
    rgb = img[..., :3]
    assert float(rgb.std()) > 0.01, "blank image"
    # Something other than white/grey was drawn: coloured data lines.
    assert (np.abs(rgb - rgb.mean(axis=-1, keepdims=True)).max(axis=-1) > 0.2).sum() > 50, "no coloured lines"
    return img


class ScriptedBackend:
    """Answers "a+b" questions: right when the budget is >= 48 thinking tokens or a is even;
    budget forcing stays in bounds, other methods think 30 tokens whatever the budget."""

    def __init__(self, fail_on=None):
        self.started = 0
        self.calls = 0
        self.fail_on = fail_on
        self.payloads = []

    async def start(self):
        self.started += 1

    async def close(self):
        pass

    async def generate(self, p):
        return self.respond(p)

    def respond(self, p):
        self.calls += 1
        self.payloads.append(p)
        q = p["messages"][0]["content"]
        a, b = map(int, re.findall(r"\d+", q)[:2])
        if self.fail_on is not None and a == self.fail_on:
            raise RuntimeError("boom")
        mx = p["max_thinking_tokens"]
        think = min(mx, 30) if p["method"] == "budget_forcing" else 30
        right = mx >= 48 or a % 2 == 0
        if p["temperature"] > 0 and p["seed"] % 2 == 1:  # odd voting samples are wrong
            right = False
        return {"thinking": "...", "answer": f"{a + b if right else a + b + 1}. Done.", "thinking_tokens": think,
                "answer_tokens": 3, "num_waits": 0, "forced_end": think == mx, "rounds": 1, "tries": 1,
                "accepted": True, "finish_reason": "stop"}


def sums_file(tmp_path):
    p = tmp_path / "sums.jsonl"
    p.write_text("".join(json.dumps({"id": f"s{a}", "question": f"What is {a}+{a + 10}?", "answer": str(2 * a + 10)})
                         + "\n" for a in range(1, 5)))
    return p


@pytest.fixture
def sums(tmp_path):
    return sums_file(tmp_path)


def scripted_cfg(tmp_path, sums, **kw):
    return EvalConfig.model_validate({
        "name": "t", "datasets": [{"name": "sums", "path": str(sums)}],
        "methods": ["budget_forcing", "token_conditional"], "budgets": [16, 48],
        "n_votes": [1, 2, 3], "base_url": "http://unused", "output_dir": str(tmp_path / "out"),
        "progress": False, "flush_every": 3, **kw,
    })


def test_sweep_writes_everything_and_resumes(tmp_path, sums):
    cfg = scripted_cfg(tmp_path, sums)
    be = ScriptedBackend()
    res = run_sweep(cfg, backend=be)
    # 4 questions x 2 methods x 2 budgets + 4 questions x 3 voting samples
    assert res.planned == 28 and res.generated == 28 and res.skipped == 0 and res.failed == 0
    # greedy requests go unseeded; voting samples are seeded seed+i at the voting temperature
    seq = [p for p in be.payloads if p["temperature"] == 0]
    vote = [p for p in be.payloads if p["temperature"] == 1.0]
    assert len(seq) == 16 and all(p["seed"] is None for p in seq)
    assert len(vote) == 12 and sorted({p["seed"] for p in vote}) == [0, 1, 2]
    assert all(p["max_thinking_tokens"] == 48 and p["method"] == "budget_forcing" for p in vote)
    out = tmp_path / "out"
    for f in ("samples.jsonl", "metrics.md", "metrics.csv", "points.csv", "voting.csv", "samples.parquet",
              "accuracy_vs_thinking.png", "voting_vs_forcing.png"):
        assert (out / f).is_file(), f
    recs = [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]
    assert len(recs) == 28
    r = recs[0]
    for k in ("dataset", "id", "method", "budget", "sample", "thinking_tokens", "answer_tokens", "extracted",
              "correct", "num_waits", "forced_end", "within_bounds", "gold"):
        assert k in r
    rows = {r["method"]: r for r in res.method_rows}
    assert list(rows) == ["budget_forcing", "token_conditional"]
    bf, tc = rows["budget_forcing"], rows["token_conditional"]
    # budget forcing: 16 -> thinks 16, 2/4 right; 48 -> thinks 30, 4/4 right
    assert bf["control"] == 1.0 and bf["performance"] == 1.0
    assert bf["scaling"] == pytest.approx(100 * 1000 * 0.5 / (30 - 16))
    # token-conditional thinks 30 at both budgets: 0/4 in bounds at 16, 4/4 at 48
    assert tc["control"] == 0.5 and tc["scaling"] is None
    votes = {v["n"]: v for v in res.vote_rows}
    # seeds 0,1,2: sample 1 is always wrong; n=1 right, n=2 tie -> first (right), n=3 right 2:1
    assert [votes[n]["accuracy"] for n in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert votes[3]["avg_total_tokens"] == 3 * 33
    md = (out / "metrics.md").read_text()
    assert "| budget_forcing | 100.0% |" in md and "| token_conditional | 50.0% |" in md
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("dataset,method,control")
    check_png(out / "accuracy_vs_thinking.png")
    check_png(out / "voting_vs_forcing.png")
    assert "28 generated" in summary(res)

    # A rerun generates nothing and does not even start the backend.
    be2 = ScriptedBackend()
    res2 = run_sweep(cfg, backend=be2)
    assert (res2.generated, res2.skipped, be2.started, be2.calls) == (0, 28, 0, 0)
    assert res2.method_rows == res.method_rows

    # A crash mid-write (torn last line, 3 lost samples): the rerun makes exactly those.
    lines = (out / SAMPLES_FILE).read_text().splitlines(keepends=True)
    (out / SAMPLES_FILE).write_text("".join(lines[:-3]) + lines[-3][:20])
    res3 = run_sweep(cfg, backend=ScriptedBackend())
    assert res3.generated == 3 and res3.skipped == 25
    assert len(run_sweep(cfg, backend=ScriptedBackend()).method_rows) == 2

    # A bigger sweep reuses what is done: one more budget -> only its 8 samples are new.
    bigger = EvalConfig.model_validate({**cfg.model_dump(), "budgets": [16, 48, 96], "vote_budget": 48})
    res4 = run_sweep(bigger, backend=ScriptedBackend())
    assert (res4.generated, res4.skipped) == (8, 28)
    # Without pinning it, the voting budget follows the largest budget (96): 12 new voting samples.
    res5 = run_sweep(EvalConfig.model_validate({**cfg.model_dump(), "budgets": [16, 48, 96]}),
                     backend=ScriptedBackend())
    assert (res5.generated, res5.skipped) == (12, 24)
    # Reports cover the configured sweep only, not everything in the log.
    assert {v["budget"] for v in res5.vote_rows} == {"96"}


def test_samples_from_another_setup_are_not_mixed(tmp_path, sums):
    from s1ray.eval.sweep import SetupMismatch

    cfg = scripted_cfg(tmp_path, sums, n_votes=[])
    run_sweep(cfg, backend=ScriptedBackend())
    for change, needle in (({"temperature": 0.7}, "temperature"), ({"max_answer_tokens": 99}, "max_answer_tokens"),
                           ({"served_model": "other"}, "model"),
                           ({"datasets": [{"name": "sums", "path": str(sums), "prompt_template": "Q: {question}"}]},
                            "datasets.sums")):
        with pytest.raises(SetupMismatch, match=needle):
            run_sweep(EvalConfig.model_validate({**cfg.model_dump(), **change}), backend=ScriptedBackend())
    # what only selects samples (limit, budgets, methods, new datasets, concurrency) may change
    ok = {**cfg.model_dump(), "limit": 2, "budgets": [16], "concurrency": 3}
    assert run_sweep(EvalConfig.model_validate(ok), backend=ScriptedBackend()).generated == 0


def test_failed_samples_are_counted_and_retried(tmp_path, sums):
    cfg = scripted_cfg(tmp_path, sums, n_votes=[])
    res = run_sweep(cfg, backend=ScriptedBackend(fail_on=3))
    assert res.failed == 4 and res.generated == 12 and "boom" in res.errors[0]
    res = run_sweep(cfg, backend=ScriptedBackend())
    assert res.generated == 4 and res.failed == 0


def test_sweep_through_the_http_backend(tmp_path, sums):
    """The HTTP path end to end against a scripted OpenAI-compatible endpoint."""
    import httpx

    from s1ray.eval.backends import HttpBackend

    script = ScriptedBackend()

    def handler(request):
        body = json.loads(request.content)
        payload = {"messages": body["messages"], "method": body["control_method"],
                   "max_thinking_tokens": body["max_thinking_tokens"], "temperature": body["temperature"],
                   "seed": body.get("seed")}
        out = script.respond(payload)
        return httpx.Response(200, json={
            "choices": [{"message": {"content": out["answer"], "reasoning_content": out["thinking"]},
                         "finish_reason": "stop",
                         "s1ray": {k: out[k] for k in ("thinking_tokens", "answer_tokens", "num_waits",
                                                       "forced_end")}}]})

    cfg = scripted_cfg(tmp_path, sums, n_votes=[1, 2], grade_workers=1)  # grading in a process pool
    res = run_sweep(cfg, backend=HttpBackend(cfg.base_url, transport=httpx.MockTransport(handler)))
    assert res.generated == 24 and res.failed == 0
    assert sum(r["correct"] for r in map(json.loads, (tmp_path / "out" / SAMPLES_FILE).open())) == 16  # 2+4+2+4 sequential, 4 of 8 votes
    assert {r["method"]: r["control"] for r in res.method_rows} == {"budget_forcing": 1.0, "token_conditional": 0.5}


# ------------------------------------------------------------------ the real thing
@pytest.mark.vllm
@pytest.mark.ray
def test_end_to_end_tiny_model_ray_actor(tmp_path, tiny_model_dir):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        cfg = EvalConfig.model_validate({
            "name": "tiny-e2e",
            "datasets": [{"name": "math500", "limit": 3}],
            "methods": ["budget_forcing", "token_conditional"],
            "budgets": [16, 48],
            "n_votes": [1, 2],
            "max_answer_tokens": 16,
            "engine": {"model": tiny_model_dir, "max_model_len": 1024, "enforce_eager": True, "cpu_kv_cache_gib": 1,
                       # vLLM CPU cannot rewind a seeded request's generator under chunked prefill
                       "extra_engine_args": {"enable_chunked_prefill": False}},
            "actor_num_cpus": 0.5,
            "output_dir": str(tmp_path / "out"),
            "progress": False,
        })
        res = run_sweep(cfg)
        print(summary(res))
        assert res.failed == 0, res.errors
        assert res.planned == res.generated == 3 * 2 * 2 + 3 * 2
        assert res.gen_tokens > 0 and res.tokens_per_s > 0
        out = tmp_path / "out"
        for f in ("samples.jsonl", "metrics.md", "metrics.csv", "accuracy_vs_thinking.png", "voting_vs_forcing.png"):
            assert (out / f).is_file(), f
        rows = {r["method"]: r for r in res.method_rows}
        assert set(rows) == {"budget_forcing", "token_conditional"}
        assert rows["budget_forcing"]["control"] == 1.0
        md = (out / "metrics.md").read_text()
        assert "| budget_forcing | 100.0% |" in md and "| token_conditional |" in md
        recs = [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]
        bf = [r for r in recs if r["method"] == "budget_forcing"]
        assert all(r["within_bounds"] and r["thinking_tokens"] <= r["max_thinking_tokens"] for r in bf)
        assert {r["mode"] for r in recs} == {"seq", "vote"}
        check_png(out / "accuracy_vs_thinking.png")
        check_png(out / "voting_vs_forcing.png")

        again = run_sweep(cfg)  # everything is done: no engine start, no generation
        assert again.generated == 0 and again.skipped == res.planned and again.startup_s == 0
    finally:
        ray.shutdown()
