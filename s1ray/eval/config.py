"""``EvalConfig``: one evaluation sweep (datasets x methods x budgets, plus majority voting).

YAML lives in ``configs/eval/``; run it with ``python jobs/evaluate.py --config configs/eval/x.yaml``
and override any field with dotted keys (``limit=10``, ``engine.max_model_len=8192``).
Exactly one of ``engine`` (the job starts engines in Ray actors) or ``base_url`` (a running s1ray
Serve endpoint) must be given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from s1ray.config import EnvVarName, RayInitConfig, S1Config, check_unique_names
from s1ray.engine.control import METHODS
from s1ray.engine.types import EngineConfig
from s1ray.formats import FormatName


class BudgetSpec(S1Config):
    """A thinking budget. In YAML a bare number means ``{max: N}``."""

    max: int | None = Field(None, ge=0, description="max thinking tokens (None: no cap)")
    min: int = Field(0, ge=0, description="min thinking tokens (budget forcing appends 'Wait')")
    num_waits: int = Field(0, ge=0, description="ignore the end of thinking at least this often")
    continuation: str | None = Field(
        None, description='what replaces an ignored end (default: the sweep\'s, else "Wait"); "": nothing'
    )

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("a budget is a number of tokens or a mapping {max, min, num_waits}")
        return {"max": v} if isinstance(v, int) else v

    @model_validator(mode="after")
    def _min_le_max(self) -> "BudgetSpec":
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self

    @property
    def label(self) -> str:
        """Stable name used in sample keys and tables: "512", "256-512", "512+w2", "none",
        "512+w2@Hmm" (a continuation of its own; "512+w2@" for none appended)."""
        s = "none" if self.max is None else str(self.max)
        if self.min:
            s = f"{self.min}-{s}"
        if self.num_waits:
            s += f"+w{self.num_waits}"
        if self.continuation is not None:
            s += f"@{self.continuation}"
        return s


class DatasetSpec(S1Config):
    """One benchmark. See :mod:`s1ray.eval.data` for where it is read from."""

    name: str = Field(description="label; aime24/math500 (shipped) and gpqa_diamond are known")
    path: str | None = Field(None, description="local .jsonl/.json/.csv/.parquet")
    hf_name: str | None = Field(None, description="HF hub dataset (network), e.g. HuggingFaceH4/MATH-500")
    hf_config: str | None = None
    split: str | None = None
    kind: Literal["math", "aime", "mcq"] | None = None
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    prompt_template: str | None = Field(None, description="e.g. '{question}\\n\\nPut the answer in \\\\boxed{{}}.'")
    limit: int | None = Field(None, ge=1, description="first N questions (overrides the sweep's limit)")

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class EvalConfig(S1Config):
    name: str = "eval"
    datasets: list[DatasetSpec] = Field(min_length=1)
    methods: list[str] = Field(default_factory=lambda: ["budget_forcing"], min_length=1)
    budgets: list[BudgetSpec] = Field(min_length=1, description="thinking budgets, e.g. [512, 1024, 2048]")
    method_budgets: dict[str, list[BudgetSpec]] = Field(
        default_factory=dict, description="per-method budgets replacing `budgets` (class_conditional: 2)"
    )
    samples_per_budget: int = Field(1, ge=1, description="samples per question and budget (accuracy is their mean)")

    # Parallel scaling: max(n_votes) samples per question, majority-voted over the first n.
    n_votes: list[int] = Field(default_factory=list, description="e.g. [1, 2, 4, 8]; empty: no voting")
    vote_method: str = "budget_forcing"
    vote_budget: BudgetSpec | None = Field(None, description="default: the largest of `budgets`")
    vote_temperature: float = Field(1.0, ge=0)

    # Where generations come from: exactly one of these.
    engine: EngineConfig | None = None
    base_url: str | None = Field(None, description="a running s1ray Serve endpoint, e.g. http://host:8000")
    api_key_env: EnvVarName = Field(None, description="env var holding the endpoint's API key")
    served_model: str = Field("s1ray", description="`model` sent to the endpoint")
    request_timeout_s: float = Field(3600.0, gt=0)

    # Ray fan-out (engine mode).
    num_engines: int = Field(1, ge=1, description="engine actors (data parallel)")
    actor_num_cpus: float = Field(0.5, ge=0)
    actor_num_gpus: float | None = Field(
        None, ge=0, description="default: tensor_parallel_size on a GPU cluster, else 0"
    )
    ray: RayInitConfig = Field(default_factory=RayInitConfig)

    output_dir: str = "runs/eval/{name}"
    limit: int | None = Field(None, ge=1, description="first N questions of every dataset")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    max_answer_tokens: int = Field(512, ge=1)
    concurrency: int = Field(64, ge=1, description="requests in flight (all engines together)")
    reasoning_format: FormatName | None = None
    continuation: str | None = None
    grade_workers: int = Field(
        0, ge=0, description="grading processes; 0: in the driver, between requests (cheapest on few cores)"
    )
    flush_every: int = Field(32, ge=1, description="append finished samples to samples.jsonl in batches of N")
    save_thinking: bool = Field(False, description="keep the thinking text in samples.jsonl")
    log_x: bool = Field(True, description="log-scale thinking-token axis in plots")
    progress: bool = True

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown control method(s) {bad}; expected some of {list(METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError("methods are repeated")
        return v

    @field_validator("vote_method")
    @classmethod
    def _vote_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown control method {v!r}; expected one of {list(METHODS)}")
        return v

    @field_validator("n_votes")
    @classmethod
    def _n_votes(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("every n must be >= 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        if (self.engine is None) == (self.base_url is None):
            raise ValueError("give exactly one of `engine` (start engines) or `base_url` (a running endpoint)")
        unknown = [m for m in self.method_budgets if m not in self.methods]
        if unknown:
            raise ValueError(f"method_budgets names method(s) not in `methods`: {unknown}")
        check_unique_names([d.name for d in self.datasets], "dataset")
        needs_max = {"token_conditional", "step_conditional", "token_conditional_bf", "step_conditional_bf",
                     "rejection_sampling"}
        for m in self.methods:
            if m in needs_max and any(b.max is None for b in self.budgets_for(m)):
                raise ValueError(f"{m} needs a max on every budget")
        return self

    def budgets_for(self, method: str) -> list[BudgetSpec]:
        return self.method_budgets.get(method) or self.budgets

    def continuation_for(self, budget: BudgetSpec) -> str | None:
        """What replaces an ignored end under ``budget``: its own string, else the sweep's."""
        return budget.continuation if budget.continuation is not None else self.continuation

    def voting_budget(self) -> BudgetSpec:
        if self.vote_budget is not None:
            return self.vote_budget
        return max(self.budgets, key=lambda b: (b.max is None, b.max or 0))

    def resolved_output_dir(self) -> str:
        """``output_dir`` with ``{name}``, a relative one under ``$S1RAY_STORAGE`` (:mod:`s1ray.storage`)."""
        from s1ray.storage import resolve_output

        return resolve_output(self.output_dir.format(name=self.name), "output_dir")
