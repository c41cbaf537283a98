"""A small client for OpenAI-compatible ``/chat/completions`` endpoints, and the two prompts the
curation sends through it: the answer judge (difficulty) and the MSC domain classifier.

No Ray here: the pipeline calls :func:`map_concurrent` inside its Ray Data tasks, so a batch's
requests run ``max_concurrency`` at a time. Retries: on connection errors, timeouts, 429 and 5xx,
with exponential backoff (``backoff_s * 2^attempt``, honouring ``Retry-After``); other 4xx fail at
once. A request that still fails gives an error string, never an exception: one bad row must not
kill a stage. The key is read from the environment variable the config names, never logged.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx


class LLMError(RuntimeError):
    pass


class ChatClient:
    def __init__(self, cfg: Mapping[str, Any], transport: httpx.BaseTransport | None = None):
        self.cfg = dict(cfg)
        headers = {"content-type": "application/json"}
        env = self.cfg.get("api_key_env")
        if env:
            key = os.environ.get(env)
            if not key:
                raise LLMError(f"environment variable {env} (api_key_env) is not set")
            headers["authorization"] = f"Bearer {key}"
        self.url = self.cfg["base_url"].rstrip("/") + "/chat/completions"
        self.http = httpx.Client(headers=headers, timeout=float(self.cfg.get("timeout_s", 120.0)), transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chat(self, messages: list[dict[str, str]]) -> str:
        body = {
            "model": self.cfg["model"],
            "messages": messages,
            "max_tokens": int(self.cfg.get("max_tokens", 64)),
            "temperature": float(self.cfg.get("temperature", 0.0)),
            **(self.cfg.get("extra_body") or {}),
        }
        retries = int(self.cfg.get("max_retries", 4))
        backoff = float(self.cfg.get("backoff_s", 1.0))
        last = ""
        for attempt in range(retries + 1):
            try:
                r = self.http.post(self.url, json=body)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        raise LLMError(f"unexpected response shape: {exc}: {r.text[:200]}") from None
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code != 429 and r.status_code < 500:
                    raise LLMError(last)
                ra = r.headers.get("retry-after")
                if ra and attempt < retries:
                    try:
                        time.sleep(min(float(ra), 60.0))
                        continue
                    except ValueError:
                        pass
            if attempt < retries:
                time.sleep(backoff * (2**attempt))
        raise LLMError(f"failed after {retries + 1} attempts: {last}")


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
