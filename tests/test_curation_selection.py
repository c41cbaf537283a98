"""The selector (pure): s1's two-stage sampler and the ablations, checked statistically over seeds."""

from __future__ import annotations

import random
from collections import Counter
from statistics import mean

import pytest

from s1ray.curation.selection import Candidate, select, truncated_geometric


def pool(seed: int = 0, sizes=(400, 150, 60, 25)) -> list[Candidate]:
    """Unbalanced domains (400 / 150 / 60 / 25), lengths 100..10000, 5 trusted rows."""
    rng = random.Random(seed)
    out = []
    for d, n in enumerate(sizes):
        for i in range(n):
            out.append(Candidate(f"d{d}-{i:04d}", f"dom{d}", rng.randint(100, 10_000), trusted=(d == 0 and i < 5)))
    return out


def test_same_seed_same_set_whatever_the_input_order():
    c = pool()
    a = select(c, 100, seed=3)
    shuffled = list(c)
    random.Random(9).shuffle(shuffled)
    assert select(shuffled, 100, seed=3) == a
    assert [p.id for p in select(c, 100, seed=4)] != [p.id for p in a]


def test_trusted_first_then_sampled_to_size():
    picks = select(pool(), 100, seed=0)
    assert len(picks) == 100 and len({p.id for p in picks}) == 100
    assert [p.how for p in picks[:5]] == ["trusted"] * 5 and all(p.how == "sampled" for p in picks[5:])
    assert [p.order for p in picks] == list(range(100))
    # trusted rows alone over the size: all kept (as s1 did); and excluded when asked
    assert len(select(pool(), 3, seed=0)) == 5
    assert all(p.how == "sampled" for p in select(pool(), 50, seed=0, include_trusted=False))


def test_domain_balance_holds_over_seeds():
    # 80 sampled from 4 domains: each domain is picked with probability 1/4 per draw (all have >= 25
    # questions), however unbalanced the pool; the random ablation follows the pool's proportions.
    c = [x for x in pool() if not x.trusted]
    dom = {x.id: x.domain for x in c}
    s1_counts, rnd_counts = Counter(), Counter()
    seeds = range(40)
    for s in seeds:
        s1_counts.update(dom[p.id] for p in select(c, 80, seed=s))
        rnd_counts.update(dom[p.id] for p in select(c, 80, seed=s, method="random"))
    n = 80 * len(seeds)
    for d in ("dom0", "dom1", "dom2", "dom3"):
        assert abs(s1_counts[d] / n - 0.25) < 0.03, s1_counts
    # chi-square against uniform, 3 degrees of freedom: 16.3 is p = 0.001
    chi2 = sum((s1_counts[d] - n / 4) ** 2 / (n / 4) for d in s1_counts)
    assert chi2 < 16.3
    assert rnd_counts["dom0"] / n > 0.55 and rnd_counts["dom3"] / n < 0.08  # 400/635 and 25/635
    div = Counter(dom[p.id] for s in seeds for p in select(c, 80, seed=s, method="diversity"))
    assert all(abs(div[d] / n - 0.25) < 0.03 for d in div)


def test_length_preference_holds_over_seeds():
    c = [x for x in pool() if not x.trusted]
    length = {x.id: x.thinking_tokens for x in c}
    for s in range(20):
        s1 = mean(length[p.id] for p in select(c, 80, seed=s))
        rnd = mean(length[p.id] for p in select(c, 80, seed=s, method="random"))
        div = mean(length[p.id] for p in select(c, 80, seed=s, method="diversity"))
        assert s1 > rnd + 2000 and s1 > div + 2000, (s, s1, rnd, div)
    # within a domain, s1 takes the longest questions first: in dom0 (400 questions, ~20 picks per
    # run) every pick comes from the top of the ranking
    top = sorted((x for x in c if x.domain == "dom0"), key=lambda x: -x.thinking_tokens)
    rank = {x.id: i for i, x in enumerate(top)}
    ranks = [rank[p.id] for s in range(20) for p in select(c, 80, seed=s) if p.id in rank]
    assert max(ranks) < 60 and mean(ranks) < 25


def test_longest_takes_the_longest_traces():
    c = pool()
    picks = select(c, 50, seed=0, method="longest", include_trusted=False)
    want = sorted((x.thinking_tokens for x in c), reverse=True)[:50]
    got = sorted((x.thinking_tokens for x in c if x.id in {p.id for p in picks}), reverse=True)
    assert got == want


def test_exhausted_domains_are_dropped_and_the_pool_can_run_out():
    c = pool(sizes=(50, 3))
    picks = select(c, 40, seed=1)
    doms = Counter(x.domain for x in c if x.id in {p.id for p in picks})
    assert doms["dom1"] == 3 and len(picks) == 40
    assert len(select(c, 1000, seed=1)) == len(c)


def test_truncated_geometric_matches_two_to_the_minus_rank():
    rng = random.Random(0)
    m, n = 6, 60_000
    counts = Counter(truncated_geometric(rng, m, 2.0) for _ in range(n))
    z = sum(2.0**-r for r in range(m))
    for r in range(m):
        assert abs(counts[r] / n - 2.0**-r / z) < 0.01
    assert truncated_geometric(rng, 1, 2.0) == 0
    assert all(0 <= truncated_geometric(rng, 5000, 2.0) < 5000 for _ in range(1000))


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown selection method"):
        select(pool(), 10, method="best")
