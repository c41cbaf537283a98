"""The one OpenAI-compatible HTTP client (s1ray/http_client.py) that traces, the curation judge and
the eval backend share: what it retries, how long it waits, and what it gives back."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from s1ray.config import ConfigError, load_config
from s1ray.http_client import EndpointConfig, HttpCallError, HttpClient, read_api_key


def _run(responses, parse=json.loads, monkeypatch=None, **endpoint):
    """POST once through a client whose transport answers ``responses`` in turn; (outcome, sleeps, hits)."""
    hits, sleeps = [], []

    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(request)
        return responses[min(len(hits), len(responses)) - 1]

    async def fake_sleep(d):
        sleeps.append(d)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    ep = EndpointConfig(base_url="http://x/v1", model="m", **endpoint)

    async def go():
        c = HttpClient(ep, api_key="k", transport=httpx.MockTransport(handler), rng=random.Random(0))
        try:
            return await c.post({"q": 1}, parse), c.requests
        finally:
            await c.aclose()

    out, requests = asyncio.run(go())
    assert requests == len(hits)
    return out, sleeps, hits


def test_retries_retryable_status_and_honours_retry_after(monkeypatch):
    out, sleeps, hits = _run([httpx.Response(429, headers={"retry-after": "7"}, text="slow down"),
                              httpx.Response(503, text="busy"), httpx.Response(200, json={"ok": 1})],
                             monkeypatch=monkeypatch, max_retries=3, backoff_base_s=0.1, backoff_max_s=10)
    assert out.ok and out.value == {"ok": 1} and out.attempts == 3
    assert sleeps[0] == 7 and 0.1 <= sleeps[1] <= 0.2  # Retry-After, then jittered backoff (base 0.1 * 2)
    assert hits[0].url == "http://x/v1/chat/completions" and hits[0].headers["authorization"] == "Bearer k"


def test_gives_up_with_the_last_error_and_does_not_retry_4xx(monkeypatch):
    out, sleeps, hits = _run([httpx.Response(500, text="boom")], monkeypatch=monkeypatch, max_retries=2,
                             backoff_base_s=0.01)
    assert (out.ok, out.error, out.attempts, out.retryable, len(hits)) == (False, "HTTP 500: boom", 3, True, 3)
    out, sleeps, hits = _run([httpx.Response(401, text="bad key")], monkeypatch=monkeypatch, max_retries=5)
    assert (out.error, out.attempts, out.retryable, sleeps) == ("HTTP 401: bad key", 1, False, [])


def test_parse_decides_what_a_200_body_means(monkeypatch):
    def parse(body: bytes):
        data = json.loads(body)
        if "choices" not in data:
            raise HttpCallError("no choices", retryable=data.get("again", False))
        return data["choices"]

    out, _, hits = _run([httpx.Response(200, json={"again": True}), httpx.Response(200, json={"choices": [1]})],
                        parse, monkeypatch=monkeypatch, backoff_base_s=0.01)
    assert out.value == [1] and len(hits) == 2
    out, _, hits = _run([httpx.Response(200, json={})], parse, monkeypatch=monkeypatch)
    assert out.error == "no choices" and len(hits) == 1


def test_endpoint_config_rules(monkeypatch):
    with pytest.raises(ConfigError, match="api_key_env.*NAME"):
        load_config(EndpointConfig, None, ["base_url=u", "model=m", "api_key_env=sk-1 2"])
    with pytest.raises(ConfigError, match="no credentials"):
        load_config(EndpointConfig, None, ["base_url=u", "model=m", "headers.X-Api-Key=k"])
    assert load_config(EndpointConfig, None, ["base_url=u", "model=m", "backoff_s=3"]).backoff_base_s == 3
    monkeypatch.delenv("S1RAY_NO_SUCH_KEY", raising=False)
    with pytest.raises(KeyError, match="S1RAY_NO_SUCH_KEY is not set"):
        read_api_key("S1RAY_NO_SUCH_KEY", KeyError)
    assert read_api_key(None) is None
