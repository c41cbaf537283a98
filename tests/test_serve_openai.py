"""OpenAI API conformance: what real clients send, driven with the real ``openai`` client
against one live Serve app (tiny model on vLLM CPU, no API key: the default).

Each request shape real clients send either works as OpenAI/vLLM define it or gets a 400 that
names the field (docs/serving_api.md). Plus a bounded schemathesis run over the OpenAPI schema.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import httpx
import openai
import pytest

from test_serve import _free_port  # one helper for both Serve modules

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

MODEL = "s1ray-tiny"
Q = [{"role": "user", "content": "What is 12 + 30?"}]
EFFORT = {"low": {"min_thinking_tokens": 6, "max_thinking_tokens": 6},
          "high": {"min_thinking_tokens": 12, "max_thinking_tokens": 12}}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    import ray
    from ray import serve

    from s1ray.serve.app import build_app
    from s1ray.serve.config import ServeConfig

    port = _free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # A short context bounds the work of any generated request (schemathesis picks budgets freely).
    cfg = ServeConfig(
        engine={"model": tiny_model_dir, "max_model_len": 256, "enforce_eager": True, "cpu_kv_cache_gib": 1},
        served_model_name=MODEL, max_ongoing_requests=8, max_queued_requests=8,
        max_n=2, default_max_answer_tokens=8, reasoning_effort=EFFORT, request_timeout_s=300,
    )
    serve.run(build_app(cfg), name="s1ray", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ext(choice) -> dict:
    return choice.model_extra["s1ray"]


def bad_request(call, param: str) -> str:
    with pytest.raises(openai.BadRequestError) as e:
        call()
    err = e.value.body
    assert err["param"] == param and param in err["message"], err
    return err["message"]


# -- shapes clients send by default --------------------------------------------------------------
def test_content_parts_and_developer_role(client):
    r = client.chat.completions.create(
        model=MODEL, max_completion_tokens=12,
        messages=[{"role": "developer", "content": "Answer briefly."},
                  {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "12 + 30?"}]}],
    )
    assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens <= 12
    # The parts are joined with a newline and the developer turn is a system turn, as vLLM renders them.
    same = client.chat.completions.create(model=MODEL, max_completion_tokens=12, messages=[
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is\n12 + 30?"}])
    assert same.usage.prompt_tokens == r.usage.prompt_tokens
    assert same.choices[0].message.content == r.choices[0].message.content
    bad_request(lambda: client.chat.completions.create(model=MODEL, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]), "messages")
    bad_request(lambda: client.chat.completions.create(model=MODEL, messages=[{"role": "tool", "content": "x"}]),
                "messages")


def test_completion_with_token_id_prompts(client, tok):
    ids = tok.encode("Compute 3*7.", add_special_tokens=False)
    text = client.completions.create(model=MODEL, prompt="Compute 3*7.", max_tokens=6)
    r = client.completions.create(model=MODEL, prompt=ids, max_tokens=6)
    assert r.usage.prompt_tokens == text.usage.prompt_tokens and r.choices[0].text == text.choices[0].text
    two = client.completions.create(model=MODEL, prompt=[ids, ids[:2]], max_tokens=4)
    assert len(two.choices) == 2
    bad_request(lambda: client.completions.create(model=MODEL, prompt=[10**7]), "prompt")


# -- fields that change what is generated ----------------------------------------------------------
def test_stop_applies_to_the_answer_only(client, tok):
    (nl,) = tok.encode("\n", add_special_tokens=False)
    body = {"max_thinking_tokens": 4, "logit_bias": {str(nl): 100}}  # every token is a newline
    plain = client.chat.completions.create(model=MODEL, messages=Q, extra_body=body)
    assert plain.choices[0].finish_reason == "length" and "\n" in plain.choices[0].message.content
    r = client.chat.completions.create(model=MODEL, messages=Q, stop=["\n"], extra_body=body)
    ch = r.choices[0]
    assert ch.finish_reason == "stop" and ch.model_extra["stop_reason"] == "\n"
    assert "\n" not in ch.message.content
    assert ch.message.model_extra["reasoning"] == "\n\n\n\n"  # thinking is not cut by the stop string
    assert ext(ch)["answer_tokens"] == 1  # the newline that matched counts as generated
    bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, stop=["a", "b", "c", "d", "e"]), "stop")


def test_logprobs_cover_the_answer_tokens_and_echo(client, tok):
    r = client.chat.completions.create(model=MODEL, messages=Q, logprobs=True, top_logprobs=2,
                                       extra_body={"max_thinking_tokens": 4, "max_answer_tokens": 5})
    ch = r.choices[0]
    content = ch.logprobs.content
    assert len(content) == ext(ch)["answer_tokens"] >= 1
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    assert client.chat.completions.create(model=MODEL, messages=Q, max_tokens=4).choices[0].logprobs is None
    bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, top_logprobs=2), "top_logprobs")
    bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, logprobs=True, stream=True), "logprobs")

    budget = {"max_thinking_tokens": 4, "max_answer_tokens": 5}
    c = client.completions.create(model=MODEL, prompt="Compute 3*7.", logprobs=1, extra_body=budget)
    ch = c.choices[0]
    assert len(ch.logprobs.tokens) == len(ch.logprobs.token_logprobs) == ext(ch)["answer_tokens"]
    assert ch.logprobs.text_offset[0] == 0 and all(len(t) == 1 for t in ch.logprobs.top_logprobs)
    echoed = client.completions.create(model=MODEL, prompt="Compute 3*7.", echo=True, extra_body=budget)
    assert echoed.choices[0].text == "Compute 3*7." + ch.text  # echo: the prompt, then the answer
    # With echo, OpenAI's logprobs cover the prompt too, which s1ray does not compute.
    bad_request(lambda: client.completions.create(model=MODEL, prompt="p", echo=True, logprobs=1), "echo")


def test_reasoning_effort_selects_a_configured_budget(client):
    low = client.chat.completions.create(model=MODEL, messages=Q, reasoning_effort="low", max_completion_tokens=64)
    high = client.chat.completions.create(model=MODEL, messages=Q, reasoning_effort="high", max_completion_tokens=64)
    assert ext(low.choices[0])["thinking_tokens"] == 6 and ext(high.choices[0])["thinking_tokens"] == 12
    # An explicit budget field overrides the preset's.
    r = client.chat.completions.create(model=MODEL, messages=Q, reasoning_effort="high",
                                       extra_body={"max_thinking_tokens": 12, "min_thinking_tokens": 9, "num_waits": 0})
    assert 9 <= ext(r.choices[0])["thinking_tokens"] <= 12
    msg = bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, reasoning_effort="medium"),
                      "reasoning_effort")
    assert "high" in msg and "low" in msg


def test_thinking_token_budget_is_the_thinking_cap(client):
    r = client.chat.completions.create(model=MODEL, messages=Q,
                                       extra_body={"thinking_token_budget": 7, "min_thinking_tokens": 7})
    assert ext(r.choices[0])["thinking_tokens"] == 7 and ext(r.choices[0])["forced_end"]
    bad_request(lambda: client.chat.completions.create(
        model=MODEL, messages=Q, extra_body={"thinking_token_budget": 7, "max_thinking_tokens": 8}), "thinking_token_budget")


@pytest.mark.parametrize("total", [1, 4, 9])
def test_max_completion_tokens_bounds_thinking_and_answer(client, total):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_completion_tokens=total)
    e = ext(r.choices[0])
    assert r.usage.completion_tokens == e["thinking_tokens"] + e["answer_tokens"] <= total
    # No thinking cap was given: the end of thinking is forced where the answer keeps
    # min(max_answer_tokens, ceil(total / 2)) tokens (default answer cap: 8).
    assert e["thinking_tokens"] <= total - min(8, math.ceil(total / 2))
    assert e["answer_tokens"] >= 1 or r.choices[0].finish_reason == "stop"
    legacy = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=total)
    assert legacy.usage.completion_tokens == r.usage.completion_tokens  # the same bound, greedy


def test_total_bound_conflicts_name_the_field(client):
    bad_request(lambda: client.chat.completions.create(
        model=MODEL, messages=Q, max_completion_tokens=4, extra_body={"min_thinking_tokens": 3}), "min_thinking_tokens")
    msg = bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, max_completion_tokens=5000),
                      "max_completion_tokens")
    assert "context" in msg
    bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, max_tokens=4, max_completion_tokens=5),
                "max_tokens")


def test_unsupported_fields_are_400_never_ignored(client, server):
    for kw, param in (({"presence_penalty": 0.5}, "presence_penalty"),
                      ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                      ({"response_format": {"type": "json_object"}}, "response_format"),
                      ({"extra_body": {"top_k": 5}}, "top_k")):
        bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, **kw), param)
    # Their no-op values are accepted (LangChain sends some by default).
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=3, presence_penalty=0, user="u1",
                                       frequency_penalty=0.0, response_format={"type": "text"})
    assert r.usage.completion_tokens <= 3


def test_both_reasoning_fields(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, extra_body={"max_thinking_tokens": 5})
    m = r.choices[0].message.model_extra
    assert m["reasoning"] and m["reasoning"] == m["reasoning_content"]


def test_streaming_with_include_usage(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=Q, stream=True, stream_options={"include_usage": True},
        extra_body={"min_thinking_tokens": 10, "max_thinking_tokens": 10, "max_answer_tokens": 4}))
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens_details.reasoning_tokens == 10
    assert all(c.usage is None for c in body)
    deltas = [c.choices[0].delta.model_extra or {} for c in body]
    assert "".join(d.get("reasoning", "") for d in deltas) == "".join(d.get("reasoning_content", "") for d in deltas)
    assert sum(bool(d.get("reasoning")) for d in deltas) >= 1
    assert body[-1].choices[0].finish_reason in ("stop", "length")
    plain = list(client.chat.completions.create(model=MODEL, messages=Q, stream=True, max_tokens=3))
    assert all(c.usage is None and c.choices for c in plain)  # no usage chunk unless asked
    bad_request(lambda: client.chat.completions.create(model=MODEL, messages=Q, stream_options={"include_usage": True}),
                "stream_options")


# -- the wire ----------------------------------------------------------------------------------------
def test_body_that_is_not_utf8_gets_an_openai_error(server):
    r = httpx.post(server + "/v1/chat/completions", content=b'{"model": "\xff\xfe"}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "body"


def test_stats_answer_at_once_and_take_no_test_hook(server):
    r = httpx.get(server + "/v1/s1ray/stats", timeout=10)
    assert r.status_code == 200 and {"requests", "aborted_requests", "generation_running"} <= set(r.json())
    assert "min_aborted" not in json.dumps(httpx.get(server + "/openapi.json").json()["paths"])


SCHEMATHESIS_HOOKS = """
import schemathesis


@schemathesis.hook
def map_body(context, body):
    # A deadline the client chose ends in a 504 by design: leave it out of generated bodies.
    if isinstance(body, dict):
        body.pop("timeout_s", None)
    return body
"""


def test_schemathesis_finds_no_server_errors(server, tmp_path):
    """Bounded: a few generated cases per operation, no 5xx and no crash."""
    hooks = tmp_path / "hooks.py"
    hooks.write_text(SCHEMATHESIS_HOOKS)
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    cmd = [exe, "run", server + "/openapi.json", "--checks", "not_a_server_error", "--phases", "examples,fuzzing",
           "--max-examples", "6", "--generation-deterministic", "--workers", "1", "--request-timeout", "300"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "SCHEMATHESIS_HOOKS": str(hooks)})
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-2000:])
