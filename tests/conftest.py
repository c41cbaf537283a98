"""Shared fixtures: a tiny model made on the fly, and one vLLM engine per test session.

vLLM's CPU engine takes ~30 s to start, so engine tests share one, driven from a private event
loop in a background thread (no pytest-asyncio needed; tests call ``loop.run(coro)``).
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` submits a coroutine and waits for it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 600):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from s1ray.tiny_model import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


@pytest.fixture(scope="session")
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="session")
def engine(tiny_model_dir, loop):
    from s1ray.engine.types import EngineConfig
    from s1ray.engine.vllm_engine import BudgetEngine

    # forcing "auto" (the default) registers the in-engine processor, so tests run both backends
    # on this one engine, choosing per request (GenerationRequest.forcing).
    cfg = EngineConfig(model=tiny_model_dir, max_model_len=1024, enforce_eager=True, cpu_kv_cache_gib=1)
    eng = loop.run(BudgetEngine.create(cfg))
    yield eng
    eng.shutdown()


@pytest.fixture(autouse=True, scope="module")
def no_ray_left_running(request):
    """A module that leaves Ray running (Ray Data starts it on first use) would make the next
    module's ``ray.init`` fail: shut it down after the module, and say which module left it."""
    yield
    import sys
    import warnings

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        warnings.warn(f"{request.module.__name__} left Ray running; shut down after the module", stacklevel=1)
        ray.shutdown()
