"""Serve on the production topology in miniature: two engine replicas of the s1ray app (real Ray
Serve, real vLLM on the tiny model), one per node of a 2-node cluster (tests/cluster_fixtures.py),
behind the HTTP ingress on the head, under a bounded closed-loop client. The second node is
removed while requests are in flight, as a lost spot instance, and a replacement node is added.
The test records what every request got and when, and checks what must hold: every request is
answered (no client hang) with 200 or, for one in flight on the lost replica, a retryable 503
(never a 500); every request sent after Serve noticed the loss succeeds; and once the
replacement replica runs, every request succeeds. The figures (status codes per phase, recovery times) are printed and written to
``serve_node_loss.json`` in the test's directory.

Synchronisation is on events: responses counted, Serve's replica states, node membership."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from cluster_fixtures import free_port, s3_server, two_nodes, wait_for  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(1200)]

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
CLIENTS = 4  # closed loop: each sends its next request when the last one is answered
BODY = {"model": "s1ray-tiny", "messages": [{"role": "user", "content": "What is 2 + 3?"}],
        "max_thinking_tokens": 32, "max_answer_tokens": 4}


def _replicas() -> Counter:
    from ray import serve

    app = serve.status().applications.get("s1ray")
    if app is None or "S1RayEngine" not in app.deployments:
        return Counter()
    return Counter({str(k): v for k, v in app.deployments["S1RayEngine"].replica_states.items()})


def _replica_nodes() -> list[str]:
    """Nodes of the live engine replicas, from the GCS actor table (the state API needs the dashboard,
    which the fixture's cluster leaves out)."""
    from ray._private.state import actors

    return [a["Address"]["NodeID"] for a in actors(actor_state_name="ALIVE").values()
            if a["ActorClassName"] == "ServeReplica:s1ray:S1RayEngine"]


class ClosedLoop:
    """``CLIENTS`` threads, each posting one request at a time; every outcome is kept."""

    def __init__(self, base: str):
        self.base, self.log, self.lock = base, [], threading.Lock()
        self.unavailable: list[tuple[str | None, str]] = []  # (Retry-After, error type) of each 503
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = http.post(self.base + "/v1/chat/completions", json=BODY)
                    status = r.status_code
                    if status == 503:
                        with self.lock:
                            self.unavailable.append((r.headers.get("retry-after"), r.json()["error"]["type"]))
                except httpx.HTTPError as e:
                    status = type(e).__name__
                with self.lock:
                    self.log.append((t0, time.monotonic(), status))

    def done(self) -> int:
        with self.lock:
            return len(self.log)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(180)
        assert not any(t.is_alive() for t in self.threads), "a client hung"


def _phase(start: float, end: float, t: dict) -> str:
    if end < t["kill"]:
        return "before the loss"
    if start < t["kill"]:
        return "in flight at the loss"
    if start < t["replaced"]:
        return "one replica left"
    return "after the replacement"


def test_serve_answers_through_a_lost_node(two_nodes, tiny_model_dir, tmp_path):
    import ray
    from ray import serve

    from s1ray.serve.app import build_app
    from s1ray.serve.config import ServeConfig

    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    cfg = ServeConfig(engine={"model": tiny_model_dir, "max_model_len": 1024, "enforce_eager": True,
                              "cpu_kv_cache_gib": 1},
                      served_model_name="s1ray-tiny", num_replicas=2, num_cpus_per_replica=1,
                      request_timeout_s=120, default_max_answer_tokens=4)
    try:
        serve.run(build_app(cfg), name="s1ray", route_prefix="/")
        assert len(set(_replica_nodes())) == 2  # one replica per node
        t: dict[str, float] = {}
        with ClosedLoop(f"http://127.0.0.1:{port}") as load:
            wait_for(lambda: load.done() >= 12, "12 answered requests")
            (lost,) = [n for n in two_nodes.list_all_nodes() if n is not two_nodes.head_node]
            t["kill"] = time.monotonic()
            two_nodes.remove_node(lost)
            t["noticed"] = wait_for(lambda: _replicas().get("RUNNING", 0) < 2, "Serve noticing the lost replica")
            two_nodes.add_node(**NODE, resources={"node2": 1})
            t["replaced"] = wait_for(lambda: _replicas().get("RUNNING", 0) == 2, "the replacement replica running")
            after = load.done()
            wait_for(lambda: load.done() >= after + 12, "12 requests after the replacement")
        log = list(load.log)
    finally:
        serve.shutdown()
    phases: dict[str, Counter] = {}
    for start, end, status in log:
        phases.setdefault(_phase(start, end, t), Counter())[str(status)] += 1
    ok_after_kill = [end for start, end, status in log if start >= t["kill"] and status == 200]
    after_noticed = Counter(str(status) for start, _, status in log if start >= t["noticed"])
    figures = {
        "requests": len(log),
        "status_by_phase": {k: dict(v) for k, v in phases.items()},
        "s_until_serve_noticed": t["noticed"] - t["kill"],
        "s_until_first_success_after_loss": (min(ok_after_kill) - t["kill"]) if ok_after_kill else None,
        "s_until_replacement_running": t["replaced"] - t["kill"],
        "alive_nodes": sum(n["Alive"] for n in ray.nodes()),
        "503s": load.unavailable,
    }
    (tmp_path / "serve_node_loss.json").write_text(json.dumps(figures, indent=1))
    print("\nserve node loss:", json.dumps(figures, indent=1))
    assert {str(status) for *_, status in log} <= {"200", "503"}, phases  # never a 500, never a dropped connection
    assert phases["before the loss"] == Counter({"200": phases["before the loss"].total()})
    assert after_noticed == Counter({"200": after_noticed.total()}), after_noticed
    assert all(ra is not None and kind == "server_unavailable" for ra, kind in load.unavailable), load.unavailable
    assert ok_after_kill and min(ok_after_kill) < t["replaced"], "nothing answered while one replica was left"
    assert phases["after the replacement"] == Counter({"200": phases["after the replacement"].total()})
