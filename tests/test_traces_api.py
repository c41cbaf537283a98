"""The API teacher path against a local OpenAI-compatible server, and resuming a stopped job.

``FakeOpenAI`` is a fault-injection boundary, not a mock of s1ray: a real HTTP server on
127.0.0.1 (aiohttp, in its own thread and event loop) that speaks the chat-completions wire
format and, per question and per attempt, deterministically answers, returns 429/500/400/401,
hangs past the client's timeout, or sends a malformed body. The code under test (httpx client,
retries, limiter, parsing, shard writer, manifest) runs unmodified against it. Hanging
requests wait on an asyncio.Event that teardown sets: nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from s1ray.config import load_config
from s1ray.traces.config import TracesConfig
from s1ray.traces.job import TracesJobError, run_traces
from s1ray.traces.output import InjectedFailure, OutputMismatch, read_manifest, read_traces

OK_TEXT = "<think>\nthinking about {q}\n</think>\n\nThe answer is \\boxed{{42}}."


class FakeOpenAI:
    """``plan``: question -> behaviour per attempt (the last one repeats). Behaviours: ok,
    reasoning (reasoning_content + content), 429, 500, 400, 401, hang, garbage (HTML),
    truncated (cut JSON), nochoices (JSON without choices)."""

    def __init__(self, plan: dict[str, list[str]] | None = None, default: str = "ok"):
        self.plan = plan or {}
        self.default = default
        self.hits: Counter[str] = Counter()
        self.arrivals: list[float] = []
        self.auth: set[str | None] = set()
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.release = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, request):
        from aiohttp import web

        body = await request.json()
        q = body["messages"][-1]["content"]
        with self._lock:
            n = self.hits[q]
            self.hits[q] += 1
            self.arrivals.append(time.monotonic())
            self.auth.add(request.headers.get("Authorization"))
        plan = self.plan.get(q, [self.default])
        b = plan[min(n, len(plan) - 1)]
        if b == "hang":
            await self.release.wait()
            return web.Response(status=500, text="released at teardown")
        if b in ("429", "500", "400", "401"):
            headers = {"Retry-After": "0"} if b == "429" else {}
            return web.Response(status=int(b), text=f"injected {b}", headers=headers)
        if b == "garbage":
            return web.Response(status=200, text="<html>502 Bad Gateway</html>", content_type="text/html")
        if b == "truncated":
            return web.Response(status=200, text='{"choices": [{"message": {"cont', content_type="application/json")
        if b == "nochoices":
            return web.json_response({"object": "chat.completion", "choices": []})
        msg = {"role": "assistant", "content": OK_TEXT.format(q=q)}
        if b == "reasoning":
            msg = {"role": "assistant", "content": "Final: \\boxed{7}", "reasoning_content": f"separate thoughts on {q}"}
        return web.json_response({
            "id": "x", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        })

    def __enter__(self):
        from aiohttp import web

        async def start():
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.release.set)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def reset(self):
        with self._lock:
            self.hits.clear()
            self.arrivals.clear()

    @property
    def total(self) -> int:
        return sum(self.hits.values())


def write_questions(path: Path, n: int) -> list[str]:
    qs = [f"Question number {i}: what is {i} + {i}?" for i in range(n)]
    with path.open("w") as f:
        for i, q in enumerate(qs):
            f.write(json.dumps({"id": f"q{i:02d}", "problem": q, "answer": str(2 * i)}) + "\n")
    return qs


def api_config(tmp_path: Path, base_url: str, student: str, out: str = "out", **over) -> TracesConfig:
    data = {
        "input": {"path": str(tmp_path / "questions.jsonl"), "fields": {"question": "problem"}},
        "output_dir": str(tmp_path / out),
        "teacher": {"kind": "api", "base_url": base_url, "model": "fake-r1", "max_concurrency": 8,
                    "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 0.5},
        "student_tokenizer": student,
        "shard_size": 5,
        "progress_interval_s": 0.5,
    }
    overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in over.items()]
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(TracesConfig, path, overrides)


def keys(rows) -> list[tuple[str, int]]:
    return sorted((r["id"], r["sample_index"]) for r in rows)


# --------------------------------------------------------------------- faults and retries
def test_api_faults_retries_and_errors(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    qs = write_questions(tmp_path / "questions.jsonl", 17)
    plan = {
        qs[6]: ["429", "ok"],
        qs[7]: ["500", "500", "ok"],
        qs[8]: ["hang", "ok"],
        qs[9]: ["garbage", "ok"],
        qs[10]: ["truncated", "nochoices", "ok"],
        qs[11]: ["500"],
        qs[12]: ["429"],
        qs[13]: ["hang"],
        qs[14]: ["400"],
        qs[15]: ["reasoning"],
        qs[16]: ["garbage"],
    }
    expected_hits = {q: 1 for q in qs[:6]} | {
        qs[6]: 2, qs[7]: 3, qs[8]: 2, qs[9]: 2, qs[10]: 3,
        qs[11]: 4, qs[12]: 4, qs[13]: 4, qs[14]: 1, qs[15]: 1, qs[16]: 4,
    }
    expected_errors = {"q11": "HTTP 500", "q12": "HTTP 429", "q13": "timeout", "q14": "HTTP 400",
                       "q16": "malformed"}
    with FakeOpenAI(plan) as srv:
        cfg = api_config(tmp_path, srv.base_url, tiny_model_dir)
        res = run_traces(cfg)
        hits = dict(srv.hits)
    assert hits == expected_hits  # retried exactly as the policy says, 400 not retried
    assert res.requests == sum(expected_hits.values())
    rows = read_traces(cfg.output_dir)
    assert keys(rows) == [(f"q{i:02d}", 0) for i in range(17)]  # every row once: none lost, none doubled
    assert (res.generated, res.ok, res.errors) == (17, 12, 5)
    by_id = {r["id"]: r for r in rows}
    for rid, what in expected_errors.items():
        assert what in by_id[rid]["error"], by_id[rid]["error"]
        assert "gave up after" in by_id[rid]["error"]
        assert by_id[rid]["thinking"] == "" and by_id[rid]["finish_reason"] is None
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for i, q in enumerate(qs):
        r = by_id[f"q{i:02d}"]
        assert r["attempts"] == expected_hits[q]
        assert r["question"] == q and r["reference_answer"] == str(2 * i) and r["teacher_model"] == "fake-r1"
        if r["id"] in expected_errors:
            continue
        assert r["error"] is None and r["finish_reason"] == "stop" and r["completion_tokens"] == 20
        if r["id"] == "q15":
            assert (r["thinking"], r["answer"], r["reasoning_format"]) == (
                f"separate thoughts on {q}", "Final: \\boxed{7}", "reasoning_content")
            assert r["extracted_answer"] == "7"
        else:
            assert (r["thinking"], r["answer"]) == (f"thinking about {q}", "The answer is \\boxed{42}.")
            assert r["extracted_answer"] == "42" and r["reasoning_format"] == "think-tags"
        assert r["thinking_tokens"] == len(tok.encode(r["thinking"], add_special_tokens=False)) > 0
        assert r["answer_tokens"] == len(tok.encode(r["answer"], add_special_tokens=False)) > 0
    m = read_manifest(cfg.output_dir)
    assert [s["file"] for s in m["shards"]] == [f"shard-0000{i}.parquet" for i in range(4)]
    assert [s["rows"] for s in m["shards"]] == [5, 5, 5, 2] and m["rows"] == 17 and m["errors"] == 5
    assert not list(Path(cfg.output_dir).glob(".*tmp*"))


def test_api_key_from_env_and_missing_key(tmp_path, tiny_model_dir, monkeypatch):
    write_questions(tmp_path / "questions.jsonl", 3)
    with FakeOpenAI() as srv:
        cfg = api_config(tmp_path, srv.base_url, tiny_model_dir, **{"teacher.api_key_env": "S1RAY_TEST_KEY"})
        monkeypatch.delenv("S1RAY_TEST_KEY", raising=False)
        from s1ray.traces.api import ApiSetupError

        with pytest.raises(ApiSetupError, match="S1RAY_TEST_KEY is not set"):
            run_traces(cfg)
        assert srv.total == 0
        monkeypatch.setenv("S1RAY_TEST_KEY", "sekrit")
        run_traces(cfg)
        assert srv.auth == {"Bearer sekrit"}


def test_rate_limit_spaces_requests(tmp_path, tiny_model_dir):
    write_questions(tmp_path / "questions.jsonl", 6)
    with FakeOpenAI() as srv:
        cfg = api_config(tmp_path, srv.base_url, tiny_model_dir,
                         **{"teacher.requests_per_minute": 600, "teacher.burst": 1})
        run_traces(cfg)
        arrivals = sorted(srv.arrivals)
    # 10 requests/s, no burst: 6 requests span at least 5 intervals of 0.1 s.
    assert len(arrivals) == 6 and arrivals[-1] - arrivals[0] >= 0.5 - 0.02


def test_token_bucket_with_fake_clock():
    from s1ray.traces.api import TokenBucket

    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(s):
        slept.append(s)
        now[0] += s

    async def go():
        b = TokenBucket(rate_per_s=2.0, capacity=2, clock=lambda: now[0], sleep=fake_sleep)
        for _ in range(5):
            await b.acquire()

    asyncio.run(go())
    # two banked tokens, then one every 0.5 s
    assert slept == pytest.approx([0.5, 0.5, 0.5]) and now[0] == pytest.approx(1.5)


def test_backoff_is_exponential_capped_and_jittered():
    import random

    from s1ray.traces.api import backoff_delay

    rng = random.Random(0)
    for attempt, (lo, hi) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (5, 10), (5, 10)]):
        d = backoff_delay(attempt, 1.0, 10.0, rng)
        assert lo <= d <= hi
    assert backoff_delay(0, 1.0, 10.0, rng, retry_after=7) == 7
    assert backoff_delay(0, 1.0, 10.0, rng, retry_after=70) == 10


# --------------------------------------------------------------------- permanent failure
def test_every_row_failing_is_a_job_failure_not_an_empty_output(tmp_path, tiny_model_dir):
    qs = write_questions(tmp_path / "questions.jsonl", 7)
    with FakeOpenAI(default="401") as srv:
        cfg = api_config(tmp_path, srv.base_url, tiny_model_dir)
        with pytest.raises(TracesJobError, match="permanent failure: all 5 rows failed.*HTTP 401"):
            run_traces(cfg)
        assert read_traces(cfg.output_dir) == []  # nothing recorded as done...
        srv.default = "ok"
        srv.reset()
        res = run_traces(cfg)  # ...so the rerun retries every row
    assert res.generated == 7 and srv.total == 7
    assert keys(read_traces(cfg.output_dir)) == [(f"q{i:02d}", 0) for i in range(len(qs))]


def test_job_script_exit_codes(tmp_path, tiny_model_dir, monkeypatch, capfd):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "generate_traces", Path(__file__).resolve().parents[1] / "jobs" / "generate_traces.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    write_questions(tmp_path / "questions.jsonl", 3)
    with FakeOpenAI(default="500") as srv:
        api_config(tmp_path, srv.base_url, tiny_model_dir)  # writes out.yaml
        conf = str(tmp_path / "out.yaml")
        assert mod.main(["--config", conf, "teacher.max_retries=0"]) == 1
        err = capfd.readouterr().err
        assert "s1ray traces: failed: TracesJobError: permanent failure" in err and "Traceback" not in err
        assert mod.main(["--config", conf, "teacher.max_retries=0", "teacher.api_key_env=NOPE_NOT_SET"]) == 1
        assert "NOPE_NOT_SET is not set" in capfd.readouterr().err
        assert mod.main(["--config", conf, "teacher.max_retries=zero"]) == 2
        assert "teacher.api.max_retries" in capfd.readouterr().err
        srv.default = "ok"
        assert mod.main(["--config", conf]) == 0
        out = capfd.readouterr().out
        assert "traces: 3 rows generated (0 errors)" in out.strip().splitlines()[-1], out
        # the job's full output went to its log, and the traceback of the failed runs with it
        log = (tmp_path / "out" / "logs" / "traces.log").read_text()
        assert "Traceback" in log and "permanent failure" in log


# --------------------------------------------------------------------- resume
def test_resume_generates_only_missing_shards(tmp_path, tiny_model_dir):
    write_questions(tmp_path / "questions.jsonl", 10)
    with FakeOpenAI() as srv:
        clean = api_config(tmp_path, srv.base_url, tiny_model_dir, out="clean",
                           shard_size=4, samples_per_question=2)
        run_traces(clean)
        assert srv.total == 20
        srv.reset()

        cfg = api_config(tmp_path, srv.base_url, tiny_model_dir, shard_size=4, samples_per_question=2,
                         fail_after_shards=2, **{"teacher.max_concurrency": 2})
        with pytest.raises(InjectedFailure):
            run_traces(cfg)
        m = read_manifest(cfg.output_dir)
        assert [s["rows"] for s in m["shards"]] == [4, 4]  # stopped after shard 2
        done_first = keys(read_traces(cfg.output_dir))
        assert len(done_first) == 8

        srv.reset()
        cfg2 = api_config(tmp_path, srv.base_url, tiny_model_dir, shard_size=4, samples_per_question=2,
                          **{"teacher.max_concurrency": 2})
        res = run_traces(cfg2)
        # Only the 12 rows not in completed shards were generated: 3 more shards, 12 requests.
        assert (res.already_done, res.generated, res.shards_written, res.requests) == (8, 12, 3, 12)
        assert srv.total == 12
        assert all(srv.hits[q] <= 2 for q in srv.hits)

        final = keys(read_traces(cfg.output_dir))
        assert final == keys(read_traces(clean.output_dir))  # same ids as a clean run, each once
        assert len(final) == len(set(final)) == 20

        srv.reset()
        res3 = run_traces(cfg2)  # nothing left: no requests at all
        assert (res3.generated, srv.total) == (0, 0)

        # More samples per question: only the new sample indices are generated.
        cfg4 = api_config(tmp_path, srv.base_url, tiny_model_dir, shard_size=4, samples_per_question=3)
        res4 = run_traces(cfg4)
        assert (res4.generated, srv.total) == (10, 10)
        assert len(read_traces(cfg.output_dir)) == 30


def test_rerun_with_retry_errors_regenerates_only_the_failed_rows(tmp_path, tiny_model_dir):
    qs = write_questions(tmp_path / "questions.jsonl", 8)
    with FakeOpenAI({qs[2]: ["500"], qs[5]: ["400"]}) as srv:
        cfg = api_config(tmp_path, srv.base_url, tiny_model_dir, shard_size=3, **{"teacher.max_retries": 1})
        first = run_traces(cfg)
        assert (first.generated, first.errors) == (8, 2)
        order = [r["id"] for r in read_traces(cfg.output_dir)]

        srv.reset()
        srv.plan = {}  # the endpoint has recovered
        assert run_traces(cfg).generated == 0 and srv.total == 0  # by default an error row is done

        retry = api_config(tmp_path, srv.base_url, tiny_model_dir, shard_size=3, retry_errors=True)
        res = run_traces(retry)
        assert (res.already_done, res.generated, res.errors) == (6, 2, 0)
        assert dict(srv.hits) == {qs[2]: 1, qs[5]: 1}  # only the failed rows were asked again
        rows = read_traces(cfg.output_dir)
        assert [r["id"] for r in rows] == order  # each key once, in its original place
        assert all(r["error"] is None for r in rows)
        m = read_manifest(cfg.output_dir)
        assert (m["rows"], m["errors"], m["superseded"]) == (8, 0, 2)
        assert len(m["shards"]) == 4  # 3 + 3 + 2, then the retried rows in a new shard

        srv.reset()
        assert run_traces(retry).generated == 0 and srv.total == 0  # nothing failed is left


def test_resume_refuses_another_setup(tmp_path, tiny_model_dir):
    write_questions(tmp_path / "questions.jsonl", 2)
    with FakeOpenAI() as srv:
        run_traces(api_config(tmp_path, srv.base_url, tiny_model_dir))
        other = api_config(tmp_path, srv.base_url, tiny_model_dir, **{"sampling.temperature": 0.7})
        with pytest.raises(OutputMismatch, match=r"sampling.temperature: 0.0 -> 0.7"):
            run_traces(other)
