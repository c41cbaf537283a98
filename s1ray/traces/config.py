"""TracesConfig: one trace-generation (or solver) job, validated on load.

    input        where the questions are (jsonl/json/parquet file, a saved HF dataset dir, or a
                 hub dataset) and how its columns map onto the question schema
    output_dir   shards + manifest.json (see :mod:`s1ray.traces.output`)
    teacher      ``kind: local`` (vLLM through ``ray.data.llm``) or ``kind: api`` (any
                 OpenAI-compatible endpoint)
    prompt       user-turn template, optional system turn, thinking prefix (local only)
    sampling     max_tokens, temperature, top_p, seed, stop, extra engine/API fields
    reasoning_format  how outputs are split into thinking and answer (``auto`` detects)
    student_tokenizer thinking/answer token counts are counted with it (s1: Qwen2.5's)
    samples_per_question  k: solver mode ("answer with model X, k samples each")

API keys never appear in a config: ``teacher.api_key_env`` names the environment variable.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from s1ray.config import RayInitConfig, S1Config
from s1ray.data.schema import QUESTION_FIELDS
from s1ray.engine.types import EngineConfig
from s1ray.formats import FORMATS
from s1ray.http_client import EndpointConfig

# How outputs are split: a reasoning format of s1ray.formats, or one of these two modes.
PARSE_MODES = ("auto", "none")
# Fields a prompt template may use.
TEMPLATE_FIELDS = ("id", "source", "question", "solution", "answer")


class InputConfig(S1Config):
    path: str = Field(description="jsonl/json/parquet file, saved HF dataset dir, or hub dataset name")
    format: Literal["auto", "jsonl", "json", "parquet", "hf"] = "auto"
    split: str = Field("train", description="HF datasets only")
    subset: str | None = Field(None, description="HF config name (hub datasets only)")
    fields: dict[str, str] = Field(
        default_factory=dict, description="schema field -> input column, e.g. {question: problem}"
    )
    source: str | None = Field(None, description="source for rows without one (default: file stem)")
    keep_extra: bool = Field(True, description="unmapped columns go to metadata")
    limit: int | None = Field(None, gt=0, description="first N questions only")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(QUESTION_FIELDS))
        if unknown:
            raise ValueError(f"unknown schema field(s) {unknown}; expected some of {list(QUESTION_FIELDS)}")
        return v


class PromptConfig(S1Config):
    template: str = Field("{question}", description="user turn; fields: " + ", ".join(TEMPLATE_FIELDS))
    system: str | None = Field(None, description="system turn (none: the chat template's default)")
    thinking_prefix: str = Field(
        "", description="local teachers: appended after the generation prompt, e.g. '<|im_start|>think\\n'"
    )
    thinking_open: bool = Field(
        False,
        description="the prompt already opens thinking (a template that appends <think>); "
        "implied by thinking_prefix. An output with no delimiter is then all thinking.",
    )
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        import string

        try:
            names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid format string ({exc}); write literal braces as {{{{ }}}}") from None
        bad = sorted(n for n in names if n.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS)
        if bad:
            raise ValueError(f"unknown field(s) {bad}; a template may use {list(TEMPLATE_FIELDS)}")
        if "question" not in {n.split(".")[0] for n in names}:
            raise ValueError("must contain {question}")
        return v

    @property
    def opens_thinking(self) -> bool:
        return self.thinking_open or bool(self.thinking_prefix)


class SamplingConfig(S1Config):
    max_tokens: int = Field(4096, gt=0, description="cap on generated tokens (thinking + answer)")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, description="per sample: seed + sample_index")
    stop: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="more vLLM SamplingParams (local) or request-body fields (api)"
    )


# A teacher writes long traces: unless its engine block says otherwise it takes the checkpoint's
# own dtype and a 32k context, not the budget engine's bfloat16/4096.
TEACHER_ENGINE_DEFAULTS = {"dtype": "auto", "max_model_len": 32768}


class LocalTeacher(S1Config):
    """vLLM through Ray Data's LLM batch API (``ray.data.llm.vLLMEngineProcessorConfig``)."""

    kind: Literal["local"] = "local"
    engine: EngineConfig = Field(
        description="the vLLM engine (model, tokenizer, dtype, max_model_len, tensor_parallel_size, "
        "max_num_seqs, extra_engine_args, ...; format, seed and forcing are the budget engine's, unused here)"
    )
    name: str | None = Field(None, description="teacher_model recorded in the output; default: engine.model")
    replicas: int = Field(1, ge=1, description="vLLM engines (data parallel)")
    max_replicas: int | None = Field(None, ge=1, description="autoscale replicas..max_replicas")
    batch_size: int = Field(32, ge=1, description="rows per batch sent to an engine")
    max_concurrent_batches: int = Field(8, ge=1, description="batches in flight per engine")
    max_pending_requests: int | None = Field(
        None, gt=0, description="requests Ray's stage lets into one engine at once (default: 1.1 x "
        "vLLM's max_num_seqs; Ray 2.60's 'no limit' (<= 0) crashes the engine actor)"
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto: cuda if the Ray cluster has GPUs, else cpu (vLLM's CPU build)"
    )
    cpu_engine_num_cpus: float = Field(
        0.5, gt=0, description="CPU engines: CPUs Ray reserves per engine actor (fractional: a 2-core "
        "machine must still fit the pre/postprocess tasks)"
    )
    map_num_cpus: float = Field(0.25, gt=0, description="CPUs per pre/postprocess task")
    map_concurrency: int | None = Field(
        None, ge=1, description="at most this many pre/postprocess tasks at once (None: 1 with CPU "
        "engines, whose cores the tasks would otherwise take; as many as the CPUs allow with GPUs)"
    )
    accelerator_type: str | None = Field(None, description="e.g. H100 (GPU clusters)")
    log_engine_metrics: bool = Field(False, description="export vLLM metrics to Ray's Prometheus endpoint")
    check_resources: bool = Field(
        True, description="fail at once if the Ray cluster lacks the CPUs/GPUs of one engine "
        "(turn off on autoscaling clusters that add nodes on demand)"
    )
    startup_timeout_s: float | None = Field(
        3600.0, gt=0, description="fail if no row comes back within this long (engine cannot be "
        "placed or cannot start); None waits forever"
    )
    final_outputs_only: bool = Field(
        True, description="ask vLLM for each request's final output only (Ray's stage streams cumulative ones)"
    )
    offline_batch_defaults: bool = Field(
        True, description="unset max_num_seqs/max_num_batched_tokens get vLLM's offline (vllm.LLM) "
        "defaults for the engine's device -- Ray's stage otherwise gets vLLM's generic 128/2048"
    )

    @model_validator(mode="before")
    @classmethod
    def _teacher_engine_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        flat = sorted(set(data) & (set(EngineConfig.model_fields) | {"engine_kwargs"}))
        if flat:
            raise ValueError(f"{flat}: engine settings go under teacher.engine (e.g. teacher.engine.model), "
                             "extra vLLM args under teacher.engine.extra_engine_args")
        if isinstance(data.get("engine"), dict):
            data = {**data, "engine": {**TEACHER_ENGINE_DEFAULTS, **data["engine"]}}
        return data

    @model_validator(mode="after")
    def _check(self) -> "LocalTeacher":
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < replicas ({self.replicas})")
        if self.device == "cpu" and self.engine.tensor_parallel_size > 1:
            raise ValueError("engine.tensor_parallel_size > 1 needs GPUs (device: cpu)")
        return self

    @property
    def model(self) -> str:
        return self.engine.model

    @property
    def tokenizer(self) -> str:
        """Renders the prompts: engine.tokenizer, else the model."""
        return self.engine.tokenizer or self.engine.model

    @property
    def label(self) -> str:
        return self.name or self.model


class ApiTeacher(EndpointConfig):
    """Any OpenAI-compatible ``/chat/completions`` endpoint (limits and retries: EndpointConfig)."""

    kind: Literal["api"] = "api"
    name: str | None = Field(None, description="teacher_model recorded in the output; default: model")

    @property
    def label(self) -> str:
        return self.name or self.model


Teacher = Annotated[Union[LocalTeacher, ApiTeacher], Field(discriminator="kind")]


class TracesConfig(S1Config):
    name: str = "traces"
    input: InputConfig
    output_dir: str
    output_format: Literal["parquet", "jsonl"] = "parquet"
    teacher: Teacher
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    reasoning_format: str = Field("auto", description="auto | none | a format of s1ray.formats (s1, think-tags)")
    student_tokenizer: str | None = Field(
        None, description="counts thinking/answer tokens; default: the local teacher's tokenizer"
    )
    samples_per_question: int = Field(1, ge=1, description="k samples per question (solver mode)")
    shard_size: int = Field(1000, ge=1, description="rows per output shard")
    max_error_fraction: float = Field(
        1.0, ge=0, le=1, description="exit non-zero if more of this run's rows failed (all failing always does)"
    )
    retry_errors: bool = Field(
        False, description="a rerun also regenerates rows recorded with an error (the new row supersedes the old)"
    )
    progress_interval_s: float = Field(10.0, gt=0)
    ray: RayInitConfig = Field(default_factory=RayInitConfig)
    fail_after_shards: int | None = Field(
        None, ge=1, description="testing hook: raise after writing this many shards in this run"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_teacher_kind(cls, data: Any) -> Any:
        t = data.get("teacher") if isinstance(data, dict) else None
        if isinstance(t, dict) and "kind" not in t:
            data = {**data, "teacher": {**t, "kind": "local"}}
        return data

    @field_validator("reasoning_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in PARSE_MODES and v not in FORMATS:
            raise ValueError(f"unknown reasoning format {v!r}; expected one of {[*PARSE_MODES, *sorted(FORMATS)]}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "TracesConfig":
        if self.teacher.kind == "api":
            if self.student_tokenizer is None:
                raise ValueError("student_tokenizer: required with an api teacher (e.g. Qwen/Qwen2.5-32B-Instruct)")
            if self.prompt.thinking_prefix:
                raise ValueError("prompt.thinking_prefix: only local teachers render raw prompts")
        return self

    @property
    def student_tokenizer_path(self) -> str:
        if self.student_tokenizer:
            return self.student_tokenizer
        return self.teacher.tokenizer  # type: ignore[union-attr]  (api needs student_tokenizer)

    def generation_fingerprint(self) -> dict[str, Any]:
        """What makes two runs' traces comparable; a resume refuses a different one.

        Not in it: concurrency, batch sizes, shard size, input limits and k -- a rerun may add
        questions or samples to an existing output.
        """
        t = self.teacher
        return json.loads(
            json.dumps(
                {
                    "teacher_kind": t.kind,
                    "teacher_model": t.model,
                    "base_url": getattr(t, "base_url", None),
                    "prompt": self.prompt.model_dump(),
                    "sampling": self.sampling.model_dump(),
                    "reasoning_format": self.reasoning_format,
                    "student_tokenizer": self.student_tokenizer_path,
                },
                sort_keys=True,
                default=str,
            )
        )
