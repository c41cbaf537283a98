"""Majority voting over sampled answers (parallel scaling). Pure: no Ray, no vLLM."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from s1ray.answers import normalize_answer


@dataclass(frozen=True)
class VoteResult:
    answer: str | None  # the winning answer as first written by a sample (None: no answers)
    distribution: dict[str, int]  # canonical answer -> votes, most votes first
    winner_index: int | None  # index of the first sample that gave the winning answer
    num_votes: int  # samples that produced an answer


def majority_vote(
    answers: Sequence[str | None], key: Callable[[str], str] | None = None
) -> VoteResult:
    """Vote among ``answers``; samples without an answer abstain.

    Answers are grouped by ``key`` (default: :func:`s1ray.answers.normalize_answer`, so "0.5" and
    "$0.5$" are one vote). Ties go to the answer that appeared first, so the result depends only
    on the samples' order -- deterministic for a fixed seed.
    """
    key = key or normalize_answer
    keys: list[str | None] = [key(a) if a is not None else None for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return VoteResult(None, {}, None, 0)
    first_seen = {}
    for i, k in enumerate(keys):
        if k is not None and k not in first_seen:
            first_seen[k] = i
    ranked = sorted(counts, key=lambda k: (-counts[k], first_seen[k]))
    winner = ranked[0]
    idx = first_seen[winner]
    return VoteResult(
        answer=answers[idx],
        distribution={k: counts[k] for k in ranked},
        winner_index=idx,
        num_votes=sum(counts.values()),
    )
