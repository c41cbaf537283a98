"""EvalConfig validation and the HTTP backend's request/response handling (pure, no server)."""

import asyncio
import json
import os

import httpx
import pytest

from s1ray.config import ConfigError, load_config
from s1ray.eval.backends import BackendError, HttpBackend, chat_body, parse_chat_response, request_from_payload
from s1ray.eval.config import BudgetSpec, EvalConfig

BASE = {"datasets": ["math500"], "budgets": [16, 48], "engine": {"model": "m"}}


def cfg(**kw):
    return EvalConfig.model_validate({**BASE, **kw})


def test_budgets_shorthand_labels_and_defaults():
    c = cfg(budgets=[16, {"max": 48, "min": 8}, {"max": 64, "num_waits": 2}, {"min": 4}])
    assert [b.label for b in c.budgets] == ["16", "8-48", "64+w2", "4-none"]
    assert c.voting_budget().label == "4-none"  # no cap counts as the largest
    assert cfg().voting_budget().label == "48"
    assert cfg(vote_budget=16).voting_budget().max == 16
    own = cfg(budgets=[{"max": 64, "num_waits": 2, "continuation": "Hmm"}, {"max": 64, "num_waits": 2, "continuation": ""}])
    assert [b.label for b in own.budgets] == ["64+w2@Hmm", "64+w2@"]  # distinct sample keys
    assert [own.continuation_for(b) for b in own.budgets] == ["Hmm", ""]  # "" is a value, not unset
    assert cfg(continuation="Hmm").continuation_for(BudgetSpec.model_validate(8)) == "Hmm"
    assert c.datasets[0].name == "math500"
    # relative: under $S1RAY_STORAGE when set, else the current directory (s1ray.storage)
    base = os.environ.get("S1RAY_STORAGE") or os.getcwd()
    assert c.resolved_output_dir() == os.path.join(os.path.realpath(base), "runs/eval/eval")
    assert cfg(n_votes=[4, 1, 2, 2]).n_votes == [1, 2, 4]


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"engine": None}, "exactly one of `engine`"),
        ({"base_url": "http://x:8000"}, "exactly one of `engine`"),
        ({"methods": ["budget_forcin"]}, "unknown control method"),
        ({"budgets": [{"max": 8, "min": 9}]}, "min (9) must be <= max (8)"),
        ({"budgets": [-1]}, "greater than or equal to 0"),
        ({"budgets": [True]}, "number of tokens"),
        ({"budgets": []}, "at least 1"),
        ({"methods": ["token_conditional"], "budgets": [{"min": 3}]}, "needs a max"),
        ({"method_budgets": {"none": [8]}}, "not in `methods`"),
        ({"n_votes": [0]}, "n must be >= 1"),
        ({"datasets": ["a", "a"]}, "repeated"),
        ({"reasoning_format": "xml"}, "unknown reasoning format"),
        ({"engine": {"model": "m", "max_model_len": 0}}, "max_model_len"),
        ({"limt": 3}, "Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_problem(kw, needle):
    with pytest.raises(Exception) as e:
        cfg(**kw)
    assert needle in str(e.value)


def test_yaml_and_dotted_overrides(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("datasets: [aime24]\nbudgets: [512]\nbase_url: http://h:8000\n")
    c = load_config(EvalConfig, f, ["limit=5", "budgets=[16, 32]", "n_votes=[1,2]",
                                    "datasets=[aime24, {name: gpqa_diamond, path: /x/gpqa.csv}]"])
    assert c.limit == 5 and [b.max for b in c.budgets] == [16, 32] and c.datasets[1].path == "/x/gpqa.csv"
    with pytest.raises(ConfigError, match="limt: unknown field"):
        load_config(EvalConfig, f, ["limt=3"])
    with pytest.raises(ConfigError, match="limit: Input should be greater than or equal to 1"):
        load_config(EvalConfig, f, ["limit=0"])
    assert BudgetSpec.model_validate(7).max == 7


# ------------------------------------------------------------------ payloads and HTTP
PAYLOAD = {"messages": [{"role": "user", "content": "2+2?"}], "method": "budget_forcing",
           "min_thinking_tokens": 8, "max_thinking_tokens": 48, "num_waits": 1, "max_answer_tokens": 16,
           "temperature": 1.0, "top_p": 1.0, "seed": 3, "continuation": None, "format": None}

RESPONSE = {
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Final Answer: 4", "reasoning_content": "think..."},
                 "s1ray": {"thinking_tokens": 48, "answer_tokens": 5, "num_waits": 1, "forced_end": True,
                           "rounds": 2, "tries": 1, "accepted": True}}],
    "usage": {"completion_tokens": 53, "completion_tokens_details": {"reasoning_tokens": 48}},
}


def test_payload_to_engine_request_and_http_body():
    req = request_from_payload(PAYLOAD)
    assert (req.budget.min_tokens, req.budget.max_tokens, req.budget.num_waits) == (8, 48, 1)
    assert req.budget.max_answer_tokens == 16 and req.seed == 3 and req.method == "budget_forcing"
    body = chat_body(PAYLOAD, "s1ray")
    assert body["control_method"] == "budget_forcing" and body["max_answer_tokens"] == 16 and "max_tokens" not in body
    assert (body["min_thinking_tokens"], body["max_thinking_tokens"], body["num_waits"]) == (8, 48, 1)
    assert body["n"] == 1 and body["seed"] == 3 and "continuation" not in body and "reasoning_format" not in body
    assert "max_thinking_tokens" not in chat_body({**PAYLOAD, "max_thinking_tokens": None}, "m")
    assert chat_body({**PAYLOAD, "continuation": ""}, "m")["continuation"] == ""  # "" is a value, not unset


def test_parse_response_with_extension_and_usage_fallback():
    r = parse_chat_response(RESPONSE)
    assert r == {"thinking": "think...", "answer": "Final Answer: 4", "thinking_tokens": 48, "answer_tokens": 5,
                 "num_waits": 1, "forced_end": True, "rounds": 2, "tries": 1, "accepted": True,
                 "finish_reason": "stop"}
    plain = json.loads(json.dumps(RESPONSE))
    del plain["choices"][0]["s1ray"]
    r = parse_chat_response(plain)  # an OpenAI-style server without s1ray's extension
    assert (r["thinking_tokens"], r["answer_tokens"], r["num_waits"]) == (48, 5, 0)
    with pytest.raises(BackendError, match="no choices"):
        parse_chat_response({"error": "x"})
    with pytest.raises(BackendError, match="token counts"):
        parse_chat_response({"choices": [{"message": {"content": "x"}}]})


def test_http_backend_retries_server_errors_not_bad_requests(monkeypatch):
    monkeypatch.setattr("s1ray.eval.backends.random.random", lambda: 0.0)  # no jitter
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, request.headers.get("authorization"), body["seed"]))
        if body["seed"] == 3 and len(seen) < 3:
            return httpx.Response(503, text="overloaded")
        if body["seed"] == 99:
            return httpx.Response(400, json={"error": {"message": "max_thinking_tokens: too big"}})
        return httpx.Response(200, json=RESPONSE)

    async def go():
        b = HttpBackend("http://serve:8000/", "s1ray", api_key="k", transport=httpx.MockTransport(handler), retries=3)
        await b.start()
        try:
            ok = await b.generate(PAYLOAD)
            with pytest.raises(BackendError, match="HTTP 400.*too big"):
                await b.generate({**PAYLOAD, "seed": 99})
        finally:
            await b.close()
        return ok

    import s1ray.eval.backends as backends

    async def fast_sleep(_):
        return None

    monkeypatch.setattr(backends.asyncio, "sleep", fast_sleep)
    ok = asyncio.run(go())
    assert ok["thinking_tokens"] == 48
    assert [s[0] for s in seen] == ["/v1/chat/completions"] * 4  # 2 x 503, 1 x 200, 1 x 400 (no retry)
    assert all(s[1] == "Bearer k" for s in seen)


def test_engine_and_http_backends_build_one_request():
    """The engine backend goes through the HTTP body and the Serve protocol, as a request over HTTP does."""
    import dataclasses

    from s1ray.engine.budget import BudgetError
    from s1ray.serve.protocol import engine_request

    same = lambda r: dataclasses.replace(r, request_id=None)  # noqa: E731  (a fresh id per request)
    assert same(request_from_payload(PAYLOAD)) == same(engine_request(chat_body(PAYLOAD, "s1ray"), 1))
    with pytest.raises(BudgetError, match="control_method"):
        request_from_payload({**PAYLOAD, "method": "beam"})
    with pytest.raises(BudgetError, match="min_thinking_tokens"):
        request_from_payload({**PAYLOAD, "min_thinking_tokens": 64})
