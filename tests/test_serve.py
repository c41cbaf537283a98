"""The Serve application, live on 127.0.0.1 with the tiny model on vLLM CPU.

Real Ray Serve + real vLLM; the only injected fault is killing the engine's process (to show
/health fails and Serve replaces the replica). Synchronisation is on responses and on the
server's own counters (``/v1/s1ray/stats``, which answers at once) polled with a deadline,
never on sleeps.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import socket
import time

import httpx
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

API_KEY = "sk-test-" + "7f3a9c1e5b"
KEY_ENV = "S1RAY_TEST_API_KEY"
MODEL = "s1ray-tiny"
Q = [{"role": "user", "content": "What is 12 + 30?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    import ray
    from ray import serve

    from s1ray.serve.app import build_app
    from s1ray.serve.config import ServeConfig

    os.environ[KEY_ENV] = API_KEY  # replicas inherit the driver's environment
    port = _free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=200 * 1024**2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = ServeConfig(
        engine={"model": tiny_model_dir, "max_model_len": 4096, "enforce_eager": True, "cpu_kv_cache_gib": 1},
        served_model_name=MODEL,
        max_ongoing_requests=2,
        max_queued_requests=1,
        request_timeout_s=120,
        api_key_env=KEY_ENV,
        max_n=8,
        default_max_answer_tokens=8,
    )
    serve.run(build_app(cfg), name="s1ray", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    yield base
    serve.shutdown()
    ray.shutdown()


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


def trigger_id(tiny_model_dir) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir).convert_tokens_to_ids("<|im_start|>")


# -- OpenAI compatibility ----------------------------------------------------------------------
def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server + "/health").status_code == 200


def test_chat_with_budget_fields(client, tiny_model_dir):
    r = client.chat.completions.create(
        model=MODEL, messages=Q,
        extra_body={"min_thinking_tokens": 12, "max_thinking_tokens": 30, "max_answer_tokens": 6,
                    "logit_bias": {str(trigger_id(tiny_model_dir)): 6.0}},
    )
    ch = r.choices[0]
    ext = ch.model_extra["s1ray"]
    assert 12 <= ext["thinking_tokens"] <= 30
    assert ext["num_waits"] >= 1
    assert ch.message.model_extra["reasoning_content"]  # thinking apart from the answer
    assert "<|im_start|>" not in ch.message.model_extra["reasoning_content"]
    assert r.usage.completion_tokens_details.reasoning_tokens == ext["thinking_tokens"]
    assert r.usage.completion_tokens == ext["thinking_tokens"] + ext["answer_tokens"]
    assert ext["answer_tokens"] <= 6


def test_completion_and_streaming(client):
    r = client.completions.create(model=MODEL, prompt="Compute 3*7.",
                                  extra_body={"max_thinking_tokens": 10, "max_answer_tokens": 5})
    assert r.choices[0].model_extra["s1ray"]["thinking_tokens"] == 10
    assert r.choices[0].model_extra["s1ray"]["forced_end"]

    thinking, answer, final = [], [], None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=Q, stream=True, stream_options={"include_usage": True},
        extra_body={"min_thinking_tokens": 20, "max_thinking_tokens": 20, "max_answer_tokens": 6},
    ):
        if not chunk.choices:  # the usage chunk, last
            usage = chunk.usage
            continue
        d = chunk.choices[0].delta
        if (rc := (d.model_extra or {}).get("reasoning_content")):
            thinking.append(rc)
        if d.content:
            answer.append(d.content)
        if chunk.choices[0].finish_reason:
            final = chunk
    assert len(thinking) > 1 and final is not None
    assert final.model_extra["s1ray"]["thinking_tokens"] == 20
    assert usage.completion_tokens_details.reasoning_tokens == 20

    texts = [c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="Compute 3*7.", stream=True, extra_body={"max_thinking_tokens": 8, "max_answer_tokens": 5})]
    assert "".join(texts)


def test_control_methods_over_http(client):
    for method in ("token_conditional", "step_conditional", "class_conditional", "rejection_sampling", "none"):
        r = client.chat.completions.create(
            model=MODEL, messages=Q, seed=1,
            max_completion_tokens=96,  # bounds "none" too, whose thinking is otherwise unbounded
            extra_body={"control_method": method, "max_thinking_tokens": 64, "max_answer_tokens": 4, "max_tries": 2},
        )
        assert r.choices[0].model_extra["s1ray"]["method"] == method


def test_majority_vote(server):
    body = {"model": MODEL, "messages": Q, "n": 4, "vote": True, "temperature": 1.0, "seed": 5,
            "max_thinking_tokens": 8, "max_answer_tokens": 3}
    r = httpx.post(server + "/v1/chat/completions", json=body, headers=auth(), timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["choices"]) == 4
    vote = out["s1ray_vote"]
    assert len(vote["answers"]) == 4
    assert sum(vote["distribution"].values()) == sum(a is not None for a in vote["answers"])
    assert vote["answer"] in vote["answers"]


def test_compare_sequential_vs_parallel(server):
    body = {"model": MODEL, "question": "What is 12 + 30?", "budget_tokens": 32, "n": 4,
            "reference_answer": "42", "max_answer_tokens": 4}
    r = httpx.post(server + "/v1/s1ray/compare", json=body, headers=auth(), timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    seq, par = out["sequential"], out["parallel"]
    assert seq["thinking_tokens"] == 32  # force_min: the whole budget, sequentially
    assert par["n"] == 4 and par["thinking_tokens"] <= 32  # the same budget split 4 ways
    assert par["thinking_tokens_per_sample"] == 8
    assert set(seq) >= {"answer", "latency_s", "correct", "total_tokens"}
    assert isinstance(seq["correct"], bool) and isinstance(par["correct"], bool)
    assert sum(par["distribution"].values()) <= 4


# -- reliability -------------------------------------------------------------------------------
BAD = [
    ("/v1/chat/completions", b"{not json", "body"),
    ("/v1/chat/completions", {"model": MODEL}, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "max_thinking_tokens": -5}, "max_thinking_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "max_thinking_tokens": 2.5}, "max_thinking_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "max_thinking_tokens": "10"}, "max_thinking_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "min_thinking_tokens": 50, "max_thinking_tokens": 10}, "min_thinking_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "n": 99}, "n"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "control_method": "beam"}, "control_method"),
    ("/v1/chat/completions", {"model": "gpt-9", "messages": Q}, "model"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "max_thinking_tokens": 9000}, "max_thinking_tokens"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "word " * 9000}]}, "prompt"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "logit_bias": {"abc": 1}}, "logit_bias"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "stream": True, "n": 2}, "stream"),
    ("/v1/chat/completions", {"model": MODEL, "messages": Q, "reasoning_format": "xml"}, "reasoning_format"),
    ("/v1/completions", {"model": MODEL, "prompt": 5}, "prompt"),
    ("/v1/s1ray/compare", {"question": "q", "budget_tokens": 0}, "budget_tokens"),
    ("/v1/s1ray/compare", {"question": "q", "budget_tokens": 3, "n": 4}, "budget_tokens"),
    ("/v1/s1ray/compare", {"budget_tokens": 30}, "question"),
]


@pytest.mark.parametrize("path,body,param", BAD, ids=[f"{p}:{f}" for p, _, f in BAD])
def test_bad_input_is_400_naming_the_field(server, path, body, param):
    kw = {"content": body, "headers": {**auth(), "content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body, "headers": auth()}
    r = httpx.post(server + path, timeout=60, **kw)
    assert r.status_code == 400, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"]


def test_api_key_required_and_never_logged(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        r = httpx.post(server + "/v1/chat/completions", json={"model": MODEL, "messages": Q}, headers=headers)
        assert r.status_code == 401
    assert httpx.get(server + "/v1/models").status_code == 401
    assert httpx.get(server + "/v1/models", headers=auth()).status_code == 200
    import ray

    logs = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")
    files = glob.glob(os.path.join(logs, "**", "*"), recursive=True)
    assert files
    for f in files:
        if os.path.isfile(f):
            with open(f, "rb") as fh:
                assert API_KEY.encode() not in fh.read(), f


@pytest.fixture()
def long_body(tiny_model_dir):
    """A request that keeps the engine busy for many seconds: every token tries to end thinking,
    so 3000 thinking tokens take ~1500 "Wait" rounds."""
    return {"model": MODEL, "messages": Q, "min_thinking_tokens": 3000, "max_thinking_tokens": 3000, "max_answer_tokens": 2,
            "logit_bias": {str(trigger_id(tiny_model_dir)): 50.0}}


def _stats(server):
    r = httpx.get(server + "/v1/s1ray/stats", headers=auth(), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _poll_stats(server, condition, timeout_s: float = 60):
    """The stats once ``condition(stats)`` holds (polled until a deadline; stats answers at once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        s = _stats(server)
        if condition(s) or time.monotonic() > deadline:
            return s


def test_client_disconnect_aborts_the_engine_request(server, long_body):
    before = _stats(server)["aborted_requests"]
    body = {**long_body, "stream": True}
    with httpx.Client(timeout=60) as c:
        with c.stream("POST", server + "/v1/chat/completions", json=body, headers=auth()) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if "reasoning_content" in line:
                    break  # generation is under way in the engine; now hang up
    after = _poll_stats(server, lambda s: s["aborted_requests"] >= before + 1 and not s["engine_unfinished_requests"])
    assert after["aborted_requests"] >= before + 1, after
    assert after["engine_unfinished_requests"] == 0


def test_request_deadline_gives_504_and_frees_the_engine(server, long_body):
    before = _stats(server)["aborted_requests"]
    body = {**long_body, "timeout_s": 0.5}
    t = time.monotonic()
    r = httpx.post(server + "/v1/chat/completions", json=body, headers=auth(), timeout=60)
    assert r.status_code == 504 and r.json()["error"]["param"] == "timeout_s"
    assert time.monotonic() - t < 30
    assert _poll_stats(server, lambda s: s["aborted_requests"] >= before + 1)["aborted_requests"] >= before + 1


def test_full_queue_rejects_with_retry_after_and_stats_stay_available(server, long_body):
    long = long_body

    async def go():
        async with httpx.AsyncClient(timeout=60) as c:
            # Two long streams take both generation slots (max_ongoing_requests=2).
            holders = []
            for _ in range(2):
                cm = c.stream("POST", server + "/v1/chat/completions", json={**long, "stream": True}, headers=auth())
                resp = await cm.__aenter__()
                # The line iterator is kept, not left by ``break``: a finalised httpx iterator closes
                # the stream, the server sees the hang-up and frees the slot.
                lines = resp.aiter_lines()
                holders.append((cm, lines))
                while "reasoning_content" not in await lines.__anext__():
                    pass
            # A third waits in the queue (max_queued_requests=1) ...
            queued = asyncio.ensure_future(c.post(server + "/v1/chat/completions", json=long, headers=auth()))
            full = await asyncio.to_thread(_poll_stats, server, lambda s: s["generation_queued"] == 1)
            # ... so the next ones are turned away at once, and stats still answer.
            burst = await asyncio.gather(
                *(c.post(server + "/v1/chat/completions", json=long, headers=auth()) for _ in range(2)))
            during = await c.get(server + "/v1/s1ray/stats", headers=auth())
            queued.cancel()  # hang up: the waiter leaves the queue
            for cm, _ in holders:
                await cm.__aexit__(None, None, None)
            return full, burst, during

    full, burst, during = asyncio.run(go())
    assert full["generation_running"] == 2 and full["generation_queued"] == 1, full
    assert [r.status_code for r in burst] == [503, 503]
    for r in burst:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "server_overloaded"
    assert during.status_code == 200 and during.json()["generation_running"] == 2
    after = _poll_stats(server, lambda s: s["generation_running"] == 0 and s["generation_queued"] == 0)
    assert (after["generation_running"], after["generation_queued"]) == (0, 0)  # every slot came back


def test_health_fails_when_engine_dies_and_serve_replaces_replica(server):
    """Fault injection: kill vLLM's engine-core process under the replica."""
    import psutil

    def engine_cores():
        """vLLM engine cores but this pytest process's own (an in-process engine's core is its
        direct child; the replica's sits under Ray's raylet and worker). By name or command
        line: the 15-character process name is truncated."""
        ours = {p.pid for p in psutil.Process().children(recursive=False)}
        return [p for p in psutil.process_iter(["name", "cmdline"]) if p.pid not in ours
                and ("EngineCore" in (p.info["name"] or "") or "EngineCore" in " ".join(p.info["cmdline"] or []))]

    procs = engine_cores()
    assert procs, "no vLLM engine-core process found"
    old = {p.pid for p in procs}
    for p in procs:
        p.kill()
    deadline = time.monotonic() + 60
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = httpx.get(server + "/health", timeout=10).status_code  # polls a condition; no fixed sleep
    assert status == 503
    # Serve's health check (check_health -> engine) fails too, so it replaces the replica.
    deadline = time.monotonic() + 240
    healthy = False
    while time.monotonic() < deadline and not healthy:
        try:
            healthy = httpx.get(server + "/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            pass
    assert healthy
    new = {p.pid for p in engine_cores()}
    assert new and not (new & old)


def test_lm_evaluation_harness_runs_unmodified(server, tmp_path):
    """lm-eval's own `local-completions` model against the endpoint, on a 3-question task."""
    import subprocess
    import sys

    data = tmp_path / "tiny_math.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                            for q, a in [("1+1?", "2"), ("2+3?", "5"), ("4*4?", "16")]))
    (tmp_path / "s1ray_tiny_math.yaml").write_text(
        "task: s1ray_tiny_math\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        "doc_to_text: 'Question: {{question}}\\nAnswer:'\n"
        "doc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['<|im_end|>']\n  max_gen_toks: 4\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "local-completions",
        "--model_args", f"model={MODEL},base_url={server}/v1/completions,tokenizer_backend=None,num_concurrent=1",
        "--tasks", "s1ray_tiny_math", "--include_path", str(tmp_path),
        "--gen_kwargs", "max_thinking_tokens=8", "--output_path", str(out), "--log_samples",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OPENAI_API_KEY": API_KEY})
    assert r.returncode == 0, r.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in out.rglob("results_*.json")]
    assert results and "s1ray_tiny_math" in results[0]["results"]
    samples = [json.loads(line) for p in out.rglob("samples_s1ray_tiny_math_*.jsonl") for line in p.read_text().splitlines()]
    assert len(samples) == 3  # every question went through the endpoint
