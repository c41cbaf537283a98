"""The inputs a curation config names: question sources (ingest), teacher trace inputs (quality,
export) and solver samples (difficulty), each a ``kind``-discriminated union."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator

from s1ray.config import S1Config
from s1ray.data.schema import QUESTION_FIELDS

TRACE_FIELDS = ("id", "sample_index", "thinking", "attempt", "error", "thinking_tokens", "finish_reason",
                "extracted_answer", "teacher_model")
SOLVER_FIELDS = ("id", "sample_index", "extracted_answer", "answer", "error")


def _check_fields(v: dict[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(v) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; expected some of {list(allowed)}")
    return v


# ------------------------------------------------------------------------------- sources
class _SourceBase(S1Config):
    name: str = Field(description="label of this source; also the default `source` of its rows")
    source: str | None = Field(None, description="`source` for rows without one (default: name)")
    fields: dict[str, str] = Field(default_factory=dict, description="schema field -> column, e.g. {question: problem}")
    keep_extra: bool = Field(True, description="unmapped columns go to metadata")
    id_prefix: str = Field("", description="prepended to every id (keeps ids unique across sources)")
    limit: int | None = Field(None, gt=0, description="first N records only")
    answer_from_solution: bool = Field(
        False, description="no answer column: take the reference answer from the solution (its last \\boxed{})"
    )

    @field_validator("fields")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_fields(v, QUESTION_FIELDS)


class HFSource(_SourceBase):
    """A HF hub dataset (``datasets.load_dataset``; needs the network) or a ``save_to_disk`` dir."""

    kind: Literal["hf"] = "hf"
    path: str = Field(description="hub name (e.g. AI-MO/NuminaMath-CoT) or a save_to_disk directory")
    config: str | None = Field(None, description="HF config (subset) name")
    split: str = "train"
    revision: str | None = Field(None, description="pin a hub revision: makes the fingerprint exact")
    data_files: list[str] | None = None
    filter: dict[str, Any] = Field(
        default_factory=dict, description="keep records matching: {column: value} or {column: {le|lt|ge|gt|ne|in: v}}"
    )


class FileSource(_SourceBase):
    """A local (or cluster-shared) jsonl or parquet file, or a directory/glob of them."""

    kind: Literal["jsonl", "parquet"]
    path: str


class MiniatureSource(_SourceBase):
    """The synthetic pool (``make_pool(n, seed)``); its ``source`` is the domain."""

    kind: Literal["miniature"] = "miniature"
    n: int = Field(1000, gt=0)
    seed: int = 0
    max_steps: int | None = Field(None, ge=1, description="None: make_pool's default")


Source = Annotated[Union[HFSource, FileSource, MiniatureSource], Field(discriminator="kind")]


class TracesDirInput(S1Config):
    """The trace job's output: ``manifest.json`` + the shards it lists (:mod:`s1ray.traces.output`)."""

    kind: Literal["traces_dir"] = "traces_dir"
    path: str


class TracesFileInput(S1Config):
    """Traces in a jsonl/parquet file (e.g. an existing s1K); ``fields`` maps trace fields to columns."""

    kind: Literal["jsonl", "parquet"]
    path: str
    fields: dict[str, str] = Field(default_factory=dict, description="e.g. {thinking: thinking_trajectories}")

    @field_validator("fields")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_fields(v, TRACE_FIELDS + SOLVER_FIELDS)


class TracesHFInput(S1Config):
    """Traces in a HF dataset (hub or save_to_disk), e.g. simplescaling/data_ablation_full59K (Gemini
    traces of s1's whole pool). Rows without an id get the question's SHA-1 id, like ingest."""

    kind: Literal["hf"] = "hf"
    path: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    fields: dict[str, str] = Field(default_factory=dict, description="e.g. {thinking: thinking_trajectories}")
    id_prefix: str = ""

    @field_validator("fields")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_fields(v, TRACE_FIELDS + SOLVER_FIELDS + ("question",))


class MiniatureTeacherInput(S1Config):
    """Traces of :func:`s1ray.miniature.problems.teacher_trace` for the miniature pool."""

    kind: Literal["miniature_teacher"] = "miniature_teacher"
    n: int = Field(1000, gt=0)
    seed: int = 0
    max_steps: int | None = Field(None, ge=1, description="None: make_pool's default")
    fail_every: int | None = Field(None, ge=1, description="testing: every k-th trace is an error")
    self_check: float = Field(0.0, ge=0, le=1, description="share of traces with each self-check habit "
                              "(a step re-checked after 'Wait', an early stop corrected)")


TraceInput = Annotated[Union[TracesDirInput, TracesFileInput, TracesHFInput, MiniatureTeacherInput],
                      Field(discriminator="kind")]


class SolverDirInput(TracesDirInput):
    name: str


class SolverFileInput(TracesFileInput):
    name: str


class MiniatureSolverInput(S1Config):
    """Answers of :func:`s1ray.miniature.problems.weak_solver` (right only on short problems)."""

    kind: Literal["miniature_weak_solver"] = "miniature_weak_solver"
    name: str = "weak_solver"
    n: int = Field(1000, gt=0)
    seed: int = 0
    max_steps: int | None = Field(None, ge=1, description="None: make_pool's default")


SolverInput = Annotated[Union[SolverDirInput, SolverFileInput, MiniatureSolverInput], Field(discriminator="kind")]
