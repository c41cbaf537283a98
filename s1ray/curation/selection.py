"""Selecting the final set (pure, seeded): s1's two-stage sampler and the paper's ablations.

s1's Algorithm 1 (Appendix C): put the trusted rows in first; then, until the target size,
pick a domain uniformly at random among those with questions left, rank that domain's questions
by thinking length (longest = rank 0) and draw one with weight ``2^-rank``; drop a domain once
it is empty. We implement exactly that, with two choices the paper leaves open:

* ties in length are ordered by a seeded shuffle (not by id, which would favour some ids);
* the draw uses the closed form of the truncated geometric law ``P(r) ~ q^r`` (``q = 1/base``,
  ``r < m``): ``r = floor(log(1 - u (1 - q^m)) / log q)`` -- exact for any pool size, O(1), and
  free of ``2^-r`` underflowing to 0 past rank 1074. With base 2 the longest question left is
  drawn half of the time, the second a quarter...; ``rank_base`` closer to 1 spreads it.

Ablations (Table 2 of the paper): ``random`` (uniform over the pool), ``longest`` (the longest
traces), ``diversity`` (domain uniform, then uniform within it). Every method first takes the
trusted rows when ``include_trusted`` (s1 does; the paper's ablations sampled the pool as is).
Same inputs and seed -> same selection, whatever the order of ``candidates``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

METHODS = ("s1", "random", "longest", "diversity")


@dataclass(frozen=True)
class Candidate:
    id: str
    domain: str
    thinking_tokens: int
    trusted: bool = False


@dataclass(frozen=True)
class Pick:
    id: str
    order: int  # 0-based position in the selection
    how: str  # trusted | sampled


def truncated_geometric(rng: random.Random, m: int, base: float) -> int:
    """A rank in [0, m) with P(r) proportional to base^-r."""
    if m <= 1:
        return 0
    q = 1.0 / base
    u = rng.random()
    qm = q**m  # underflows to 0.0 for big m: then this is the untruncated law, correctly
    r = int(math.floor(math.log1p(-u * (1.0 - qm)) / math.log(q)))
    return min(max(r, 0), m - 1)


def _by_length(rng: random.Random, pool: list[Candidate]) -> list[Candidate]:
    pool = sorted(pool, key=lambda c: c.id)
    rng.shuffle(pool)  # seeded tie order
    pool.sort(key=lambda c: -c.thinking_tokens)  # stable: longest first
    return pool


def select(
    candidates: Sequence[Candidate],
    size: int,
    seed: int = 0,
    method: str = "s1",
    include_trusted: bool = True,
    rank_base: float = 2.0,
) -> list[Pick]:
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {list(METHODS)}")
    rng = random.Random(seed)
    cands = sorted(candidates, key=lambda c: c.id)
    picks: list[Pick] = []
    if include_trusted:
        for c in cands:
            if c.trusted:
                picks.append(Pick(c.id, len(picks), "trusted"))
        pool = [c for c in cands if not c.trusted]
    else:
        pool = list(cands)
    need = size - len(picks)
    if need <= 0:
        return picks  # the trusted rows alone reach the size: all of them are kept, as in s1

    def add(c: Candidate) -> None:
        picks.append(Pick(c.id, len(picks), "sampled"))

    if method == "random":
        for c in rng.sample(pool, min(need, len(pool))):
            add(c)
    elif method == "longest":
        for c in _by_length(rng, pool)[:need]:
            add(c)
    else:  # s1 | diversity: domain uniform at random, then one question of it
        domains: dict[str, list[Candidate]] = {}
        for c in pool:
            domains.setdefault(c.domain, []).append(c)
        for d in domains:
            domains[d] = _by_length(rng, domains[d]) if method == "s1" else domains[d]
        live = sorted(domains)
        while need > 0 and live:
            k = rng.randrange(len(live))
            qs = domains[live[k]]
            r = truncated_geometric(rng, len(qs), rank_base) if method == "s1" else rng.randrange(len(qs))
            add(qs.pop(r))
            need -= 1
            if not qs:
                live.pop(k)
    return picks
