"""Local teachers: vLLM through Ray Data's LLM batch API (``ray.data.llm``).

The pipeline is Ray's own processor, built by ``build_processor(vLLMEngineProcessorConfig(..))``:

    from_items(units) -> preprocess (task)  -> vLLMEngineStage (actor pool: the engines)
                      -> postprocess (task) -> finish errors (task) -> driver -> shards

* **preprocess** renders the prompt -- chat template, generation prompt, then
  ``prompt.thinking_prefix`` (s1's ``<|im_start|>think\\n``) -- and tokenizes it with the
  teacher's tokenizer (cached per worker process), and attaches the row's sampling params.
  Ray's chat-template and tokenize stages are off: the chat-template stage cannot append text
  after the generation prompt, and tokenizing here (``add_special_tokens=False``, the template
  already has them) saves two actor pools, which on a 2-core machine is the difference
  between fitting and not. Ray's detokenize stage is off too: it decodes with
  ``skip_special_tokens=True``, which erases s1's ``<|im_start|>answer`` delimiter. Instead
  the engine does not detokenize (``detokenize=False``, as Ray's own examples do) and the
  postprocess tasks decode each finished row once with ``skip_special_tokens=False`` -- off
  the engine's critical path; only with stop strings, which need vLLM's incremental
  detokenizer, does vLLM produce the text.
* **vLLMEngineStage** is Ray's: ``replicas`` engines (an actor pool, ``max_replicas`` to
  autoscale), ``batch_size`` rows per batch, ``max_concurrent_batches`` batches in flight per
  engine, ``should_continue_on_error`` so one bad row (say, a prompt over the context) becomes
  a row with its error instead of failing the job. On CPU the stage is given
  ``cpu_engine_num_cpus`` (fractional) through ``placement_group_config`` -- otherwise it asks
  for a GPU -- and every other stage fractional CPUs, so 2 cores do not deadlock.
* **postprocess** splits thinking/answer, counts tokens with the student tokenizer (cached per
  worker process), extracts the answer. Rows that failed bypass Ray's postprocess; the
  "finish errors" map turns them into output rows with ``error`` set. With CPU engines these
  tasks run one at a time (``map_concurrency``), so they do not take the engine's cores.

**Two changes to Ray's vLLM stage**, made by swapping the stage's UDF class for a subclass
(same stage, same actor pool). They reach into ``ray.llm._internal``; if that moves, the stock
stage is used and a warning says so.

* *Final outputs only*: Ray 2.60's stage submits requests with vLLM's default
  ``RequestOutputKind.CUMULATIVE``, so the engine builds a cumulative output (token list and
  text) for every request at every step, only for the stage to keep the last one. With
  ``teacher.final_outputs_only`` (default) each request's ``SamplingParams`` says
  ``FINAL_ONLY``. Measured on the tiny CPU model (``AsyncLLM``, 1024 x 128 tokens): 10-30%
  more output tokens/s.
* *Offline batch defaults*: the stage's ``AsyncLLM`` gets vLLM's generic scheduler defaults
  (128 sequences, 2048 batched tokens) where ``vllm.LLM`` gets its offline ones (256/4096 on
  CPU, 1024/16384 on an H100). With ``teacher.offline_batch_defaults`` (default) the engine
  gets ``vllm.LLM``'s, read from vLLM's own table inside the actor (see
  :func:`offline_batch_defaults`); ``teacher.engine`` settings still override them.

vLLM's periodic stats are off (``disable_log_stats``, as ``vllm.LLM`` has them) unless
``teacher.log_engine_metrics`` exports them.

``finish_reason``: Ray's vLLM stage does not carry vLLM's finish reason, so it is inferred:
``length`` when the row used its whole ``max_tokens`` (or the context) and its last token is
not an end-of-sequence token, else ``stop``.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable

from s1ray.dataio import local_copy
from s1ray.traces.records import TRACE_COLUMNS, finish_row, load_tokenizer, render_prompt, token_counter

log = logging.getLogger("s1ray.traces")


def resolve_device(teacher) -> str:
    if teacher.device != "auto":
        return teacher.device
    import ray

    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def engine_kwargs(cfg, device: str) -> dict[str, Any]:
    e = cfg.teacher.engine
    kw: dict[str, Any] = dict(
        max_model_len=e.max_model_len, tensor_parallel_size=e.tensor_parallel_size, dtype=e.dtype,
        enforce_eager=e.enforce_eager, enable_prefix_caching=e.enable_prefix_caching,
        # vLLM's periodic stats cost the engine's frontend work on every step for every request
        # (vllm.LLM turns them off too); Ray's metrics export needs them.
        disable_log_stats=not cfg.teacher.log_engine_metrics,
    )
    if e.max_num_seqs is not None:
        kw["max_num_seqs"] = e.max_num_seqs
    if device == "cuda":
        kw["gpu_memory_utilization"] = e.gpu_memory_utilization
    elif cfg.sampling.seed is not None:
        # vLLM's CPU build fails ("CPU Generator does not use offset") when a seeded request is
        # prefilled in chunks.
        kw["enable_chunked_prefill"] = False
    kw.update(e.extra_engine_args)
    return kw


def processor_config(cfg, device: str):
    from ray.data.llm import vLLMEngineProcessorConfig

    t = cfg.teacher
    kw: dict[str, Any] = dict(
        model_source=t.model,
        engine_kwargs=engine_kwargs(cfg, device),
        batch_size=t.batch_size,
        concurrency=(t.replicas, t.max_replicas or t.replicas),
        max_concurrent_batches=t.max_concurrent_batches,
        max_pending_requests=t.max_pending_requests,
        should_continue_on_error=True,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=t.log_engine_metrics,
    )
    if device == "cpu":
        kw["placement_group_config"] = {"bundles": [{"CPU": t.cpu_engine_num_cpus}]}
        if t.engine.cpu_kv_cache_gib is not None:
            kw["runtime_env"] = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(t.engine.cpu_kv_cache_gib)}}
    elif t.accelerator_type:
        kw["accelerator_type"] = t.accelerator_type
    return vLLMEngineProcessorConfig(**kw)


def sampling_params(cfg) -> dict[str, Any]:
    s = cfg.sampling
    sp: dict[str, Any] = dict(
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        skip_special_tokens=False,  # keep the format's delimiters in the text
        spaces_between_special_tokens=False,
        # Stop strings need vLLM's incremental detokenizer; otherwise the postprocess tasks
        # decode each finished row once, off the engine's critical path.
        detokenize=bool(s.stop),
    )
    if s.stop:
        sp["stop"] = list(s.stop)
    sp.update(s.extra)
    return sp


def eos_token_ids(tokenizer_name: str, model: str) -> list[int]:
    """End-of-sequence ids: the tokenizer's and the model's generation config's."""
    tok = load_tokenizer(tokenizer_name)
    ids: set[int] = set() if tok.eos_token_id is None else {int(tok.eos_token_id)}
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(local_copy(model)).eos_token_id
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
    except Exception:  # noqa: BLE001 -- no generation_config.json: the tokenizer's is enough
        pass
    return sorted(ids)


# --------------------------------------------------------------------- Ray Data UDFs
# Module-level functions bound with functools.partial: plain functions, so Ray Data runs them
# as tasks (a callable *class* would ask for an actor pool).


def _preprocess(row: dict[str, Any], *, tokenizer: str, prompt, sampling: dict[str, Any], seed: int | None,
                max_model_len: int) -> dict:
    tok = load_tokenizer(tokenizer)
    text = render_prompt(tok, row, prompt)
    ids = tok.encode(text, add_special_tokens=False)
    sp = dict(sampling)
    if seed is not None:
        sp["seed"] = seed + int(row["sample_index"])
    # A prompt that cannot fit is failed here, not in the engine: Ray's stages pass a row with
    # __inference_error__ set straight through. (Ray 2.60 cannot concatenate the output of a
    # batch in which *every* row failed inside vLLM with other batches' output -- the error
    # rows' null ``metrics`` against a struct -- and fails the job; over-long prompts are the
    # usual way a whole batch fails.)
    err = ""
    if len(ids) >= max_model_len:
        err = f"prompt is {len(ids)} tokens; the engine's max_model_len is {max_model_len}"
    return {"tokenized_prompt": ids, "sampling_params": sp, "__inference_error__": err}


def _finish_reason(row: dict[str, Any], max_tokens: int, max_model_len: int, eos: frozenset[int]) -> str:
    n = int(row.get("num_generated_tokens") or 0)
    toks = row.get("generated_tokens")
    last = int(toks[-1]) if toks is not None and len(toks) else None
    full = n >= max_tokens or int(row.get("num_input_tokens") or 0) + n >= max_model_len
    return "length" if full and last not in eos else "stop"


def _text(row: dict[str, Any], tokenizer: str, eos: frozenset[int]) -> str:
    """vLLM's text, or -- when the engine did not detokenize -- the tokens decoded here."""
    text = row.get("generated_text") or ""
    toks = row.get("generated_tokens")
    if text or toks is None or not len(toks):
        return text
    ids = [int(x) for x in toks]
    if ids[-1] in eos:  # vLLM's own text leaves the end-of-sequence token out too
        ids = ids[:-1]
    return load_tokenizer(tokenizer).decode(ids, skip_special_tokens=False)


def _postprocess(row: dict[str, Any], *, common: dict[str, Any], student: str, tokenizer: str,
                 max_tokens: int, max_model_len: int, eos: frozenset[int]) -> dict:
    out = finish_row(
        row,
        count=token_counter(student),
        text=_text(row, tokenizer, eos),
        finish_reason=_finish_reason(row, max_tokens, max_model_len, eos),
        prompt_tokens=int(row.get("num_input_tokens") or 0) or None,
        completion_tokens=int(row.get("num_generated_tokens") or 0),
        latency_s=float(row["time_taken_llm"]) if row.get("time_taken_llm") is not None else None,
        **common,
    )
    return out


def _finish_errors(row: dict[str, Any], *, common: dict[str, Any]) -> dict:
    err = row.get("__inference_error__")
    if err:
        return finish_row(row, count=len, error=str(err), **common)
    return {c: row.get(c) for c in TRACE_COLUMNS}


def offline_batch_defaults(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """vLLM's *offline* scheduler defaults for this machine, for the args the user left unset.

    Ray's stage builds its ``AsyncLLM`` with vLLM's default usage context (ENGINE_CONTEXT),
    which has no entry in vLLM's per-device table and so gets the generic fallback:
    ``max_num_seqs`` 128 and ``max_num_batched_tokens`` 2048 -- where ``vllm.LLM`` (LLM_CLASS)
    gets 256/4096 on CPU and 1024/16384 on an H100. A trace job is offline batch inference, so
    it gets ``vllm.LLM``'s numbers. Runs inside the engine actor: the table depends on the
    device there, not on the driver's.
    """
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    world = int(engine_kwargs.get("tensor_parallel_size") or 1) * int(engine_kwargs.get("pipeline_parallel_size") or 1)
    tokens, seqs = EngineArgs.get_batch_defaults(world)
    scale = 2 if engine_kwargs.get("performance_mode") == "throughput" else 1  # as vLLM doubles them
    out: dict[str, Any] = {}
    if engine_kwargs.get("max_num_seqs") is None and UsageContext.LLM_CLASS in seqs:
        out["max_num_seqs"] = seqs[UsageContext.LLM_CLASS] * scale
    if engine_kwargs.get("max_num_batched_tokens") is None and UsageContext.LLM_CLASS in tokens:
        n = tokens[UsageContext.LLM_CLASS] * scale
        if engine_kwargs.get("enable_chunked_prefill") is False:
            # Without chunked prefill a whole prompt must fit in one step (vLLM does the same).
            n = max(n, int(engine_kwargs.get("max_model_len") or 0))
        out["max_num_batched_tokens"] = n
    return out


def _engine_stage_udf(final_only: bool, offline_defaults: bool):
    """Ray's vLLM stage UDF with s1ray's two changes (see the module docstring)."""
    from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStageUDF

    class S1rayVLLMEngineStageUDF(vLLMEngineStageUDF):
        def normalize_engine_kwargs(self, engine_kwargs):
            kw = super().normalize_engine_kwargs(engine_kwargs)
            if offline_defaults:
                try:
                    kw.update(offline_batch_defaults(kw))
                except Exception as exc:  # noqa: BLE001 -- a vLLM internal moved: its own defaults
                    log.warning("traces: cannot read vLLM's offline batch defaults (%s)", exc)
            return kw

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not final_only:
                return
            from vllm.sampling_params import RequestOutputKind

            prepare = self.llm._prepare_llm_request

            async def prepare_final_only(row):
                request = await prepare(row)
                if hasattr(request.params, "output_kind"):
                    request.params.output_kind = RequestOutputKind.FINAL_ONLY
                return request

            self.llm._prepare_llm_request = prepare_final_only

    return S1rayVLLMEngineStageUDF


def _customize_engine_stage(processor, teacher) -> None:
    if not (teacher.final_outputs_only or teacher.offline_batch_defaults):
        return
    try:
        stage = processor.get_stage_by_name("vLLMEngineStage")
        udf = _engine_stage_udf(teacher.final_outputs_only, teacher.offline_batch_defaults)
        # model_copy, not assignment: assigning re-runs the stage's validator, which would
        # recompute its resources without the placement group config (and ask for a GPU).
        processor.stages["vLLMEngineStage"] = stage.model_copy(update={"fn": udf})
    except Exception as exc:  # noqa: BLE001 -- an internal moved: the stock stage still works
        log.warning("traces: cannot customize Ray's vLLM stage (%s); using it as is", exc)


def build_dataset(units: list[dict[str, Any]], cfg, device: str):
    """The Ray Data pipeline over ``units`` (lazy; iterate it to run)."""
    import ray
    from ray.data.llm import build_processor

    t = cfg.teacher
    tokenizer = t.tokenizer
    common = dict(teacher_model=t.label, reasoning_format=cfg.reasoning_format,
                  thinking_open=cfg.prompt.opens_thinking)
    map_kwargs: dict[str, Any] = {"num_cpus": t.map_num_cpus}
    # With a CPU engine every other process competes for its cores; each extra task process also
    # imports transformers and loads the tokenizers (seconds of CPU), so one task at a time keeps
    # more of the cores for the engine (bench/bench_traces.py measures the difference).
    concurrency = t.map_concurrency or (1 if device == "cpu" else None)
    if concurrency:
        map_kwargs["compute"] = ray.data.TaskPoolStrategy(size=concurrency)
    processor = build_processor(
        processor_config(cfg, device),
        preprocess=functools.partial(_preprocess, tokenizer=tokenizer, prompt=cfg.prompt,
                                     sampling=sampling_params(cfg), seed=cfg.sampling.seed,
                                     max_model_len=t.engine.max_model_len),
        postprocess=functools.partial(_postprocess, common=common, student=cfg.student_tokenizer_path,
                                      tokenizer=tokenizer,
                                      max_tokens=cfg.sampling.max_tokens, max_model_len=t.engine.max_model_len,
                                      eos=frozenset(eos_token_ids(tokenizer, t.model))),
        preprocess_map_kwargs=map_kwargs,
        postprocess_map_kwargs=map_kwargs,
    )
    _customize_engine_stage(processor, t)
    # Blocks of about 4 engine batches: enough blocks to keep several engines fed, few enough
    # that small jobs do not pay a task per row.
    blocks = max(1, min(len(units), math.ceil(len(units) / (4 * t.batch_size))))
    ds = ray.data.from_items(units, override_num_blocks=blocks)
    ds = processor(ds)
    return ds.map(functools.partial(_finish_errors, common=common), **map_kwargs)


class EngineUnavailable(RuntimeError):
    """The local teacher's engines cannot be placed or did not start."""


def check_resources(cfg, device: str) -> None:
    """Fail fast when the cluster cannot hold one engine (Ray Data would wait forever)."""
    import ray

    t = cfg.teacher
    have = ray.cluster_resources()
    if device == "cpu":
        need = {"CPU": t.cpu_engine_num_cpus + t.map_num_cpus}
    else:
        need = {"GPU": float(t.engine.tensor_parallel_size)}
    short = {k: v for k, v in need.items() if have.get(k, 0.0) < v}
    if short:
        raise EngineUnavailable(
            f"the Ray cluster has {{{', '.join(f'{k}: {have.get(k, 0.0):g}' for k in need)}}}, one {device} "
            f"engine (with its pre/postprocessing) needs {{{', '.join(f'{k}: {v:g}' for k, v in need.items())}}}"
            + (" -- set teacher.device: cpu for vLLM's CPU build" if device == "cuda" else "")
            + " (teacher.check_resources: false if the cluster autoscales)"
        )


def run_local(units: list[dict[str, Any]], cfg, sink: Callable[[dict[str, Any]], None]) -> None:
    """Generate ``units`` with the local teacher; ``sink`` gets every output row as it arrives.

    The dataset is iterated in a helper thread so that the driver can give up when no row has
    come back within ``teacher.startup_timeout_s`` (an engine actor that cannot be placed
    waits forever in Ray Data).
    """
    import queue
    import threading

    t = cfg.teacher
    device = resolve_device(t)
    if t.check_resources:
        check_resources(cfg, device)
    log.info("local teacher %s on %s: %d replica(s), TP %d, batch %d", t.model, device,
             t.replicas, t.engine.tensor_parallel_size, t.batch_size)
    ds = build_dataset(units, cfg, device)
    rows: queue.Queue = queue.Queue(maxsize=4096)

    def pump() -> None:
        try:
            for row in ds.iter_rows():
                rows.put(("row", dict(row)))
            rows.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 -- handed to the driver thread
            rows.put(("error", exc))

    threading.Thread(target=pump, name="s1ray-traces-pump", daemon=True).start()
    first = True
    while True:
        try:
            kind, val = rows.get(timeout=t.startup_timeout_s if first else None)
        except queue.Empty:
            raise EngineUnavailable(
                f"no row came back within teacher.startup_timeout_s={t.startup_timeout_s:g} s: the "
                f"engine could not be placed (see the autoscaler messages) or did not start"
            ) from None
        first = False
        if kind == "row":
            sink(val)
        elif kind == "done":
            return
        else:
            raise val
