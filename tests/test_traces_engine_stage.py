"""s1ray's changes to Ray's vLLM stage, checked against vLLM's own config code (no engine started).

Ray's stage builds ``AsyncLLM`` with vLLM's ENGINE_CONTEXT, whose scheduler defaults are the
generic 128 sequences / 2048 batched tokens; ``vllm.LLM`` gets its offline table's (256/4096 on
CPU, 1024/16384 on an H100). The traces job asks for ``vllm.LLM``'s.
"""

from __future__ import annotations

import pytest

from s1ray.config import load_config
from s1ray.traces.config import TracesConfig
from s1ray.traces.local import _engine_stage_udf, engine_kwargs, offline_batch_defaults

pytestmark = pytest.mark.vllm


def _llm_class_defaults(world: int) -> tuple[int, int]:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    tokens, seqs = EngineArgs.get_batch_defaults(world)
    return seqs[UsageContext.LLM_CLASS], tokens[UsageContext.LLM_CLASS]


def _resolved(kw: dict, usage=None):
    """The scheduler config vLLM resolves from these engine args (what the engine would run)."""
    from vllm import AsyncEngineArgs

    cfg = AsyncEngineArgs(**kw).create_engine_config(usage) if usage else AsyncEngineArgs(**kw).create_engine_config()
    return cfg.scheduler_config.max_num_seqs, cfg.scheduler_config.max_num_batched_tokens


def test_offline_defaults_are_vllm_llm_defaults(tiny_model_dir):
    from vllm.usage.usage_lib import UsageContext

    base = dict(model=tiny_model_dir, max_model_len=2048, dtype="bfloat16", enforce_eager=True)
    stock = _resolved(base)  # what Ray's stage gets today
    offline = _resolved(base, UsageContext.LLM_CLASS)  # what vllm.LLM gets
    ours = _resolved({**base, **offline_batch_defaults(base)})
    assert ours == offline
    assert ours != stock, "the fix is moot if vLLM's default context already gets the offline table"
    assert ours[0] > stock[0]


def test_offline_defaults_leave_user_values_and_scale_with_the_engine():
    seqs, tokens = _llm_class_defaults(1)
    assert offline_batch_defaults({}) == {"max_num_seqs": seqs, "max_num_batched_tokens": tokens}
    assert offline_batch_defaults({"max_num_seqs": 7, "max_num_batched_tokens": 9}) == {}
    assert offline_batch_defaults({"max_num_seqs": 7}) == {"max_num_batched_tokens": tokens}
    # vLLM's table is per world size (TP x PP) and doubles in throughput mode.
    seqs2, tokens2 = _llm_class_defaults(2)
    assert offline_batch_defaults({"tensor_parallel_size": 2}) == {"max_num_seqs": seqs2, "max_num_batched_tokens": tokens2}
    assert offline_batch_defaults({"performance_mode": "throughput"}) == {"max_num_seqs": 2 * seqs,
                                                                         "max_num_batched_tokens": 2 * tokens}
    # Without chunked prefill a whole prompt has to fit in one step.
    kw = {"enable_chunked_prefill": False, "max_model_len": 10 * tokens}
    assert offline_batch_defaults(kw)["max_num_batched_tokens"] == 10 * tokens


def test_stage_udf_adds_the_defaults_to_rays_engine_kwargs():
    """The subclass's normalize_engine_kwargs is Ray's plus the defaults (and only with the flag)."""
    seqs, tokens = _llm_class_defaults(1)
    for flag, expect in ((True, {"max_num_seqs": seqs, "max_num_batched_tokens": tokens}), (False, {})):
        cls = _engine_stage_udf(final_only=True, offline_defaults=flag)
        udf = cls.__new__(cls)  # normalize_engine_kwargs needs no engine
        udf.model = "m"
        given = {"model": "m", "max_model_len": 2048}
        out = udf.normalize_engine_kwargs(given)
        assert out == {"max_model_len": 2048, **expect}  # Ray drops "model"; ours adds the defaults
        assert given == {"model": "m", "max_model_len": 2048}  # not mutated (Ray keys UDFs on it)


def test_engine_stats_are_off_unless_exported():
    def kw(**teacher):
        over = ["input.path=q.jsonl", "output_dir=out", "teacher.engine.model=m", "teacher.device=cpu"]
        over += [f"teacher.{k}={str(v).lower()}" for k, v in teacher.items()]
        return engine_kwargs(load_config(TracesConfig, None, over), "cpu")

    assert kw()["disable_log_stats"] is True
    assert kw(log_engine_metrics=True)["disable_log_stats"] is False
