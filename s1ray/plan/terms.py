"""A memory term, a stage's plan and its verdict (pure data; no arithmetic of its own)."""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class Term:
    """One line of a per-device memory budget. ``counted=False``: shown, but inside another
    term's peak (e.g. the recompute that never coexists with the logits buffer)."""

    name: str
    bytes: int
    source: str
    counted: bool = True

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass(frozen=True)
class Estimate:
    """A wall-time figure and where it comes from."""

    label: str
    hours: float
    gpu_hours: float | None
    source: str


@dataclass
class StagePlan:
    stage: str
    kind: str  # train | engine | none
    resources: dict[str, float]  # what one bundle asks Ray for
    bundles: int  # how many (workers, replicas, engines)
    device: str  # e.g. "H100 80GB (79.6 GiB)" or "CPU RAM"
    capacity_bytes: int | None  # per device; None: no GPU terms (CPU-only or API stage)
    shape_source: str = ""
    terms: list[Term] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    estimates: list[Estimate] = field(default_factory=list)
    kv_sequences: float | None = None  # engines: sequences at max_model_len per replica
    min_kv_sequences: float | None = None  # engines: what must fit (one sequence)
    problems: list[str] = field(default_factory=list)  # what makes it fail besides memory

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.terms if t.counted)

    @property
    def fits(self) -> bool:
        if self.problems:
            return False
        if self.capacity_bytes is None:
            return True
        if self.kv_sequences is not None and self.min_kv_sequences is not None:
            return self.kv_sequences >= self.min_kv_sequences and self.total_bytes <= self.capacity_bytes
        return self.total_bytes <= self.capacity_bytes

    def breaking_term(self) -> Term | None:
        """The largest counted term: the one to shrink first when the plan does not fit."""
        counted = [t for t in self.terms if t.counted]
        return max(counted, key=lambda t: t.bytes) if counted and not self.fits else None
