"""Ray metrics for the Serve app: they appear in the Ray dashboard and Ray's Prometheus export."""

from __future__ import annotations

from ray.util.metrics import Counter, Histogram

from s1ray.engine.types import GenerationResult

_LATENCY_BOUNDS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]


class ServeMetrics:
    def __init__(self, model: str):
        tags = ("endpoint", "method")
        self.model = model
        self.requests = Counter("s1ray_requests", "Completed generation requests", tag_keys=tags)
        self.thinking_tokens = Counter("s1ray_thinking_tokens", "Thinking tokens generated", tag_keys=tags)
        self.answer_tokens = Counter("s1ray_answer_tokens", "Answer tokens generated", tag_keys=tags)
        self.forced_ends = Counter("s1ray_forced_ends", "Thinking ended by the budget cap", tag_keys=tags)
        self.continuations = Counter("s1ray_continuations", "'Wait' continuations appended", tag_keys=tags)
        self.timeouts = Counter("s1ray_timeouts", "Requests past their deadline", tag_keys=("endpoint",))
        self.latency = Histogram("s1ray_request_latency_s", "Request latency (s)", boundaries=_LATENCY_BOUNDS,
                                 tag_keys=tags)

    def observe(self, endpoint: str, method: str, results: list[GenerationResult], seconds: float) -> None:
        tags = {"endpoint": endpoint, "method": method}
        self.requests.inc(tags=tags)
        self.latency.observe(seconds, tags=tags)
        for r in results:
            if r.thinking_tokens:
                self.thinking_tokens.inc(r.thinking_tokens, tags=tags)
            if r.answer_tokens:
                self.answer_tokens.inc(r.answer_tokens, tags=tags)
            if r.forced_end:
                self.forced_ends.inc(tags=tags)
            if r.num_waits:
                self.continuations.inc(r.num_waits, tags=tags)
