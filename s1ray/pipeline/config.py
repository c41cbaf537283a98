"""``PipelineConfig``: one YAML that chains the stages (configs/pipeline/*.yaml).

Each stage's own typed config sits in its section, exactly as its job would read it; the
pipeline only wires outputs to inputs (curated dataset -> SFT data, exported model -> eval and
Serve) and records per-stage completion so a rerun resumes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from s1ray.config import S1Config
from s1ray.curation.config import CurationConfig
from s1ray.eval.config import EvalConfig
from s1ray.serve.config import ServeConfig
from s1ray.traces.config import TracesConfig
from s1ray.train.config import TrainConfig

# The model a pipeline stage gets from an earlier one; a config leaves it out (the plan reads it
# as "the wired model's shape").
WIRED_MODEL = "unused"

Stage = Literal["base_model", "candidates", "traces", "solver", "curation", "heldout", "train", "eval", "paper",
                "serve"]


class BaseModelConfig(S1Config):
    """Miniature only: SFT starts from a tiny model made from scratch (no hub)."""

    seed: int = 0
    hidden_size: int = Field(128, ge=64)
    num_hidden_layers: int = Field(2, ge=1)
    max_position_embeddings: int = Field(512, ge=128)


class HeldoutConfig(S1Config):
    """Miniature only: evaluation problems the curated training set does not contain."""

    n: int = Field(60, ge=1)
    seed: int = 0
    min_steps: int = Field(1, ge=1)


class ExtrapolationConfig(S1Config):
    waits: list[int] = Field(default_factory=lambda: [0, 1, 2, 4, 6], min_length=1,
                             description="forced Waits beyond the natural end of thinking (the format's string)")
    continuations: list[str] = Field(default_factory=lambda: ["", "Hmm", "Alternatively"],
                                     description='other strings at ablation_waits ("": none appended)')
    ablation_waits: int = Field(2, ge=1)
    max_thinking_tokens: int = Field(256, ge=1, description="a cap, so a student stuck in a loop still ends")


class DataAblationConfig(S1Config):
    selections: list[Literal["s1", "random", "longest", "diversity", "all"]] = Field(
        default_factory=lambda: ["s1", "random", "longest", "diversity", "all"], min_length=1,
        description="one student per selection method (all: the whole curated pool), same size and recipe")
    budget: int = Field(128, ge=0, description="the thinking budget every student is evaluated at")


class PaperConfig(S1Config):
    """The paper's experiments beyond the eval sweep (s1ray/pipeline/paper.py)."""

    extrapolation: ExtrapolationConfig = Field(default_factory=ExtrapolationConfig)
    data_ablation: DataAblationConfig = Field(default_factory=DataAblationConfig)


class PipelineConfig(S1Config):
    name: str
    work_dir: str = "runs/pipeline/{name}"
    stages: list[Stage] = Field(min_length=1)
    base_model: BaseModelConfig | None = None
    traces: TracesConfig | None = None
    solver: TracesConfig | None = None
    curation: CurationConfig | None = None
    heldout: HeldoutConfig | None = None
    train: TrainConfig | None = None
    eval: EvalConfig | None = None
    eval_untrained: bool = Field(False, description="also evaluate the model SFT started from")
    paper: PaperConfig | None = None
    serve: ServeConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _wired_models(cls, data: Any) -> Any:
        """Fill the models the pipeline wires in itself (SFT's for eval/Serve, base_model's for SFT).
        A section whose stage is not listed does not run, so it needs no model either."""
        if not isinstance(data, dict):
            return data
        stages = data.get("stages") or []
        wired = [(s, "engine") for s in ("eval", "serve") if "train" in stages or s not in stages]
        if "base_model" in stages:
            wired.append(("train", None))
        data = dict(data)
        for section, sub in wired:
            block = data.get(section)
            if not isinstance(block, dict):
                continue
            block = dict(block)
            if sub is None:
                block.setdefault("model", WIRED_MODEL)
            elif isinstance(block.get(sub), dict):
                block[sub] = {"model": WIRED_MODEL, **block[sub]}
            data[section] = block
        return data

    @model_validator(mode="after")
    def _sections_present(self) -> "PipelineConfig":
        for stage in self.stages:
            section = "curation" if stage == "candidates" else stage
            if getattr(self, section) is None and stage not in ("base_model", "heldout", "paper"):
                raise ValueError(f"stage {stage!r} is listed in stages but section {stage!r} is missing")
        if "paper" in self.stages:
            if self.paper is None:
                self.paper = PaperConfig()
            missing = [s for s in ("base_model", "curation", "heldout", "train", "eval") if s not in self.stages]
            if missing:
                raise ValueError(f"stage 'paper' needs the stages {missing} before it")
        if "base_model" in self.stages and self.base_model is None:
            self.base_model = BaseModelConfig()
        if "heldout" in self.stages and self.heldout is None:
            self.heldout = HeldoutConfig()
        return self

    def resolved_work_dir(self) -> str:
        """``work_dir`` with ``{name}``, a relative one under ``$S1RAY_STORAGE`` (:mod:`s1ray.storage`)."""
        from s1ray.storage import resolve_output

        return resolve_output(self.work_dir.format(name=self.name), "work_dir")
