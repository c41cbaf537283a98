"""The curation's OpenAI-compatible chat calls, and the two prompts it sends: the answer judge
(difficulty) and the MSC domain classifier.

No Ray here: the pipeline calls :func:`map_concurrent` inside its Ray Data tasks, whose code is
synchronous, so :class:`ChatClient` is a blocking front on the shared async
:class:`~s1ray.http_client.HttpClient` (retries, backoff with jitter, ``Retry-After``,
concurrency and rate limits), run on an event loop of its own thread. A request that still
fails gives :class:`LLMError` (the callers record it), never a dead stage. The key is read from
the environment variable the config names, never logged.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from s1ray.curation.config import ChatEndpointConfig
from s1ray.http_client import HttpCallError, HttpClient, read_api_key


class LLMError(RuntimeError):
    pass


def _endpoint(cfg: Mapping[str, Any] | ChatEndpointConfig) -> ChatEndpointConfig:
    if isinstance(cfg, ChatEndpointConfig):
        return cfg
    # Stage tasks get a dumped JudgeConfig: its `mode` is the pipeline's, not the client's.
    known = set(ChatEndpointConfig.model_fields) | {"backoff_s"}
    return ChatEndpointConfig.model_validate({k: v for k, v in dict(cfg).items() if k in known})


def _content(body: bytes) -> str:
    try:
        return json.loads(body)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        text = body[:200].decode("utf-8", "replace")
        raise HttpCallError(f"unexpected response shape: {exc}: {text}", retryable=False) from None


class ChatClient:
    """Blocking ``chat(messages) -> str``, safe to call from many threads at once."""

    def __init__(self, cfg: Mapping[str, Any] | ChatEndpointConfig, transport=None):
        self.endpoint = _endpoint(cfg)
        key = read_api_key(self.endpoint.api_key_env, LLMError)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="s1ray-chat", daemon=True)
        self._thread.start()

        async def make() -> HttpClient:  # the client's locks and connections belong to this loop
            return HttpClient(self.endpoint, api_key=key, transport=transport)

        self.http = self._run(make())
        # A client nobody closes (one per domain batch) must not leave its thread behind.
        self._finalizer = weakref.finalize(self, self._loop.call_soon_threadsafe, self._loop.stop)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.http.aclose())
        self._finalizer()  # stops the loop
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chat(self, messages: list[dict[str, str]]) -> str:
        ep = self.endpoint
        body = {"model": ep.model, "messages": messages, "max_tokens": ep.max_tokens,
                "temperature": ep.temperature, **ep.extra_body}
        out = self._run(self.http.post(body, _content, what="chat"))
        if out.ok:
            return out.value
        if out.retryable:
            raise LLMError(f"failed after {out.attempts} attempts: {out.error}")
        raise LLMError(out.error)


def map_concurrent(fn: Callable[[Any], Any], items: Sequence[Any], max_concurrency: int) -> list[Any]:
    """``[fn(x) for x in items]`` with up to ``max_concurrency`` calls in flight; order kept."""
    if not items:
        return []
    if max_concurrency <= 1 or len(items) == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(items))) as pool:
        return list(pool.map(fn, items))


# ------------------------------------------------------------------------------- judge
JUDGE_SYSTEM = "You are a strict grader of mathematics answers."
JUDGE_TEMPLATE = """Decide whether the attempt's final answer is equivalent to the reference.

## Problem
{question}

## Reference solution
{reference}

## Attempt
{attempt}

Ignore the reasoning and formatting; compare only the final answers. Reply with exactly one word: Yes or No."""
_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def judge_messages(question: str, reference: str, attempt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_TEMPLATE.format(question=question, reference=reference, attempt=attempt)}]


def parse_judge(reply: str) -> bool | None:
    """True for Yes, False for No, None when the reply has neither (the first one counts)."""
    m = _YES_NO.search(reply or "")
    return None if m is None else m.group(1).lower() == "yes"


# ------------------------------------------------------------------------------- domains
DOMAIN_TEMPLATE = """Classify the problem below into exactly one domain of the Mathematics Subject Classification (MSC 2020).

{domains}

## Problem
{question}

Reply with the code of the one best domain only, e.g. "Code: 11"."""
_CODE = re.compile(r"code\s*[:=]?\s*\**\s*(\d{2})", re.I)
_ANY_CODE = re.compile(r"\b(\d{2})\b")


def domain_messages(question: str, domains_prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": DOMAIN_TEMPLATE.format(domains=domains_prompt, question=question)}]


def parse_domain_code(reply: str, codes: Iterable[str]) -> str | None:
    """The MSC code the reply names ("Code: 11" first, else the first known two-digit code)."""
    known = set(codes)
    for rx in (_CODE, _ANY_CODE):
        for m in rx.finditer(reply or ""):
            if m.group(1) in known:
                return m.group(1)
    return None
