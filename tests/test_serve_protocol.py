"""The request protocol and the generation gate, without a server (pure)."""

import asyncio

import pytest
from pydantic import ValidationError

from s1ray.engine.budget import BudgetError
from s1ray.serve import protocol as P
from s1ray.serve.admission import Admission, QueueFull

Q = [{"role": "user", "content": "q"}]


def chat(**kw):
    return P.ChatCompletionRequest.model_validate({"model": "m", "messages": Q, **kw})


def field_of(call) -> str:
    with pytest.raises(BudgetError) as e:
        call()
    return e.value.field


def test_openai_token_limits_are_the_total_and_max_answer_tokens_the_answer_cap():
    b = chat(max_completion_tokens=10, max_answer_tokens=3).budget(64)
    assert (b.max_total_tokens, b.max_answer_tokens, b.thinking_cap) == (10, 3, 7)
    assert chat(max_tokens=10).budget(64).max_total_tokens == 10
    b = chat().budget(64)
    assert b.max_total_tokens is None and b.max_answer_tokens == 64


def test_total_bound_errors_use_the_clients_name():
    assert field_of(lambda: chat(max_tokens=4, max_completion_tokens=5).check()) == "max_tokens"
    with pytest.raises(BudgetError) as e:
        chat(max_completion_tokens=4, min_thinking_tokens=3).budget(64)
    assert e.value.field == "min_thinking_tokens" and "max_completion_tokens (4)" in str(e.value)
    body = chat(max_tokens=9)
    renamed = body.field_error(BudgetError("max_total_tokens", "too big for max_total_tokens"))
    assert renamed.field == "max_tokens" and "max_total_tokens" not in str(renamed)


def test_reasoning_effort_presets_and_the_thinking_token_budget_alias():
    effort = {"low": {"min_thinking_tokens": 2, "max_thinking_tokens": 8, "num_waits": 1}}
    b = chat(reasoning_effort="low").budget(64, effort)
    assert (b.min_tokens, b.max_tokens, b.num_waits) == (2, 8, 1)
    b = chat(reasoning_effort="low", max_thinking_tokens=4, num_waits=0).budget(64, effort)
    assert (b.min_tokens, b.max_tokens, b.num_waits) == (2, 4, 0)  # explicit fields win
    assert field_of(lambda: chat(reasoning_effort="max").budget(64, effort)) == "reasoning_effort"
    assert chat(thinking_token_budget=5).budget(64).max_tokens == 5
    assert chat(thinking_token_budget=5, reasoning_effort="low").budget(64, effort).max_tokens == 5
    assert field_of(lambda: chat(thinking_token_budget=5, max_thinking_tokens=6).check()) == "thinking_token_budget"


@pytest.mark.parametrize("kw,field", [
    ({"presence_penalty": 0.1}, "presence_penalty"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"store": True}, "store"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "n": 2}, "stream"),
    ({"stream": True, "logprobs": True}, "logprobs"),
])
def test_unsupported_values_name_the_field(kw, field):
    assert field_of(lambda: chat(**kw).check()) == field


def test_no_op_values_are_accepted():
    chat(presence_penalty=0, frequency_penalty=0.0, tools=[], tool_choice="none", response_format={"type": "text"},
         store=False, parallel_tool_calls=True, user="u").check()


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError) as e:
        chat(top_k=3)
    assert e.value.errors()[0]["type"] == "extra_forbidden"


def test_messages_accept_text_parts_developer_and_echoed_assistant_turns():
    body = P.ChatCompletionRequest.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "x", "reasoning_content": "t", "reasoning": "t", "refusal": None,
         "tool_calls": [], "annotations": []},
        {"role": "user", "content": "q2"}]})
    assert [m.rendered() for m in body.messages][:3] == [
        {"role": "system", "content": "a\nb"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]
    with pytest.raises(ValidationError, match="only text parts"):
        P.Message.model_validate({"role": "user", "content": [{"type": "image_url", "image_url": {}}]})


def test_completion_prompts():
    prompts = lambda p: P.CompletionRequest.model_validate({"model": "m", "prompt": p}).prompts()  # noqa: E731
    assert prompts("a") == [{"prompt": "a"}]
    assert prompts(["a", "b"]) == [{"prompt": "a"}, {"prompt": "b"}]
    assert prompts([1, 2]) == [{"prompt_token_ids": [1, 2]}]
    assert prompts([[1], [2, 3]]) == [{"prompt_token_ids": [1]}, {"prompt_token_ids": [2, 3]}]
    assert field_of(lambda: prompts([])) == "prompt"


def test_stop_and_logprobs_reach_the_engine_request():
    req = chat(stop="\n", logprobs=True, top_logprobs=3).to_request(8, messages=Q)
    assert req.stop == ("\n",) and req.logprobs == 3
    assert chat(stop=["a", "b"]).to_request(8, messages=Q).logprobs is None
    assert field_of(lambda: chat(top_logprobs=2).to_request(8, messages=Q)) == "top_logprobs"
    assert field_of(lambda: chat(stop=["a"] * 5).to_request(8, messages=Q)) == "stop"
    comp = P.CompletionRequest.model_validate({"model": "m", "prompt": "p", "logprobs": 2})
    assert comp.to_request(8, prompt="p").logprobs == 2
    echo = P.CompletionRequest.model_validate({"model": "m", "prompt": "p", "logprobs": 2, "echo": True})
    assert field_of(lambda: echo.to_request(8, prompt="p")) == "echo"


def test_admission_runs_queues_then_refuses():
    async def go():
        gate = Admission(ongoing=1, queued=1)
        await gate.acquire()  # runs
        waiter = asyncio.ensure_future(gate.acquire())  # queues
        while gate.waiting < 1:
            await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await gate.acquire()
        gate.release()
        await waiter  # the queued one gets the slot
        assert (gate.running, gate.waiting) == (1, 0)
        gate.release()
        assert gate.running == 0

    asyncio.run(go())


def test_every_control_method_and_the_empty_continuation_reach_the_engine_request():
    from s1ray.engine.control import METHODS

    for m in METHODS:
        assert chat(control_method=m, max_thinking_tokens=8).to_request(8, messages=Q).method == m
    assert chat(continuation="").to_request(8, messages=Q).continuation == ""
    assert chat(continuation="Hmm").to_request(8, messages=Q).continuation == "Hmm"
    with pytest.raises(ValidationError):
        chat(control_method="beam_search")
