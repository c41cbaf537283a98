"""Which questions are duplicates, and which copy is kept (pure: no Ray, no I/O).

Reasons, checked in this order (see :mod:`s1ray.curation.filters` for contamination):

* ``contaminated:<eval set>`` -- found by the 8-gram index (:class:`~s1ray.curation.filters.EvalIndex`);
* ``exact_duplicate`` -- same :func:`~s1ray.curation.text.exact_key` as a row kept by the exact
  step (the first in :func:`keep_priority` order among the rows that are not contaminated);
* ``near_duplicate`` -- estimated Jaccard >= threshold with a *kept* row (MinHash + LSH).

Which copy is kept is deterministic, whatever the block order: rows are visited by
:func:`keep_priority` (trusted sources first, then the order of ``sources``, then id), and a row
is dropped only for a *kept* row it duplicates -- greedy, so a chain A~B~C with A, C dissimilar
never drops C for A (what keeping one row per connected component would do).

The same decisions come from two drivers of these functions: :func:`dedupe_decisions` on rows in
memory, and the Ray Data stage (:mod:`s1ray.curation.stages.dedupe`), which never holds the pool
in one process. Both run the same steps:

1. keys: the signature is cut into ``bands`` bands of ``r = num_perm / bands`` rows, each band
   hashed to 64 bits with its index (:func:`band_keys`); the exact key is one more band
   (:func:`exact_band_keys`);
2. buckets: rows sharing a key are candidate pairs (:func:`bucket_pairs`); two rows share a band
   with probability ``1 - (1 - J^r)^bands``;
3. :func:`candidate_decisions` over the candidate rows only: exact groups (the first in priority
   order is kept), then, among the rows left, the candidates whose full signatures agree on >=
   ``threshold`` of entries are edges (:func:`signature_similarity`); the edge graph falls into
   connected components (:func:`components`), each resolved greedily in priority order
   (:func:`resolve_near`).

A 64-bit hash stands for a band's bytes and for an exact key: two different ones share a hash
with probability 2^-64, and a candidate is still checked on its exact key or full signature.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from s1ray.curation.filters import is_trusted_source

_ORDER_DIGITS = 10  # source order < 2**30 fits ten digits, so the key sorts as the tuple does


def keep_priority(row: Mapping[str, Any], source_order: Mapping[str, int], trusted: Sequence[str]) -> tuple:
    """Sort key: lower is kept first among duplicates."""
    src = row.get("source") or ""
    return (0 if is_trusted_source(src, trusted) else 1, source_order.get(row.get("ingest_source") or "", 1 << 30), str(row["id"]))


def priority_key(row: Mapping[str, Any], source_order: Mapping[str, int], trusted: Sequence[str]) -> str:
    """:func:`keep_priority` as one string that sorts the same way (a column Ray Data can sort,
    group and join on): trust digit, zero-padded source order, then the id."""
    t, order, rid = keep_priority(row, source_order, trusted)
    return f"{t}{order:0{_ORDER_DIGITS}d}{rid}"


def id_of(priority: str) -> str:
    return priority[1 + _ORDER_DIGITS:]


def _as_signatures(values: Sequence) -> np.ndarray:
    """``(n, num_perm)`` uint32 from signatures given as bytes or arrays."""
    return np.stack([np.frombuffer(v, dtype=np.uint32) if isinstance(v, (bytes, bytearray)) else np.asarray(v, np.uint32)
                     for v in values])


def _mix64(z: np.ndarray) -> np.ndarray:
    # splitmix64's finaliser: every input bit reaches every output bit
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """``(n, bands)`` int64: each band of each signature hashed with the band's index."""
    n, perm = signatures.shape
    if perm % bands:
        raise ValueError(f"num_perm ({perm}) must be a multiple of bands ({bands})")
    cols = signatures.reshape(n, bands, perm // bands).astype(np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        h = _mix64(np.broadcast_to(np.arange(bands, dtype=np.uint64), (n, bands)).copy())
        for c in range(cols.shape[2]):
            h = _mix64(h ^ cols[:, :, c])
    return h.view(np.int64)


def exact_band_keys(exact_keys: Sequence[str], bands: int) -> np.ndarray:
    """``(n,)`` int64: the exact key as one more band (index ``bands``) beside the LSH bands."""
    h = np.array([int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in exact_keys],
                 dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(h ^ _mix64(np.full(len(h), bands, dtype=np.uint64))).view(np.int64)


def _shared_runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stable sort order of ``keys`` and the starts and ends (in that order) of the runs of
    two or more equal keys: almost every key is alone, so singletons never reach Python."""
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    cuts = np.flatnonzero(ks[1:] != ks[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(ks)]])
    shared = ends - starts > 1
    return order, starts[shared], ends[shared]


def bucket_pairs(keys: np.ndarray, priorities: np.ndarray) -> list[tuple[str, str]]:
    """Every pair of rows that share a key, as ``(higher priority, lower priority)``."""
    if len(keys) < 2:
        return []
    order, starts, ends = _shared_runs(np.asarray(keys))
    out: list[tuple[str, str]] = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        members = sorted(set(priorities[order[s:e]].tolist()))
        out.extend(combinations(members, 2))
    return out


def exact_groups(keys: Sequence[str], priorities: Sequence[str]) -> dict[str, str]:
    """``{priority of a duplicate: priority of its group's kept row}`` (groups by exact key)."""
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for k, p in sorted(zip(keys, priorities), key=lambda kp: kp[1]):
        if k in first:
            out[p] = first[k]
        else:
            first[k] = p
    return out


def signature_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal entries of two ``(n, num_perm)`` signature arrays."""
    return (a == b).mean(axis=1)


def components(edges: Iterable[tuple[str, str, float]]) -> list[list[str]]:
    """The connected components of the edge graph, each sorted, in order of their first node."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = defaultdict(list)
    for x in parent:
        groups[find(x)].append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def resolve_near(edges: Iterable[tuple[str, str, float]]) -> dict[str, tuple[str, str]]:
    """``{id: ("near_duplicate", detail)}`` from the edges ``(priority, priority, similarity)``.

    Within each component, in priority order, a row is dropped for the kept neighbour it is most
    similar to (the earlier one on a tie); rows dropped keep nobody else out."""
    edges = list({(min(a, b), max(a, b)): (min(a, b), max(a, b), s) for a, b, s in edges}.values())
    neighbours: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for a, b, s in edges:
        neighbours[b].append((a, s))
    out: dict[str, tuple[str, str]] = {}
    for comp in components(edges):
        kept: set[str] = set()
        for p in comp:
            best = None
            for q, s in sorted(neighbours.get(p, ())):
                if q in kept and (best is None or s > best[1]):
                    best = (q, s)
            if best is None:
                kept.add(p)
            else:
                out[id_of(p)] = ("near_duplicate", f"of {id_of(best[0])} (J~{best[1]:.2f})")
    return out


def candidate_decisions(pairs: Iterable[tuple[str, str]], rows: Mapping[str, tuple[str, np.ndarray]], *,
                        exact: bool, threshold: float) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, float]]]:
    """The exact and near decisions, and the near edges, from the candidate ``pairs`` and the
    candidate ``rows`` ``{priority: (exact key, signature)}``. Every row that shares a key with
    another is a candidate, so an exact group is always whole here."""
    out: dict[str, tuple[str, str]] = {}
    dups = exact_groups([k for k, _ in rows.values()], list(rows)) if exact else {}
    out.update({id_of(p): ("exact_duplicate", f"of {id_of(k)}") for p, k in dups.items()})
    near = sorted({(a, b) for a, b in pairs if a not in dups and b not in dups})
    if not near:
        return out, []
    sims = signature_similarity(np.stack([rows[a][1] for a, _ in near]), np.stack([rows[b][1] for _, b in near]))
    edges = [(a, b, float(x)) for (a, b), x in zip(near, sims) if x >= threshold]
    out.update(resolve_near(edges))
    return out, edges


def dedupe_decisions(
    rows: Sequence[Mapping[str, Any]],
    *,
    exact: bool = True,
    near: bool = True,
    bands: int = 16,
    threshold: float = 0.8,
    source_order: Mapping[str, int] | None = None,
    trusted: Sequence[str] = (),
) -> dict[str, tuple[str, str]]:
    """``{id: (reason, detail)}`` for the rows to drop, with every row in memory.

    Each row needs ``id``, ``source``, ``ingest_source``, ``contaminated`` (eval set or None),
    ``contam_detail``, ``exact_key`` and ``minhash`` (uint32 signature, array or bytes).
    """
    source_order = source_order or {}
    out: dict[str, tuple[str, str]] = {}
    clean = []
    for r in rows:
        if r.get("contaminated"):
            out[str(r["id"])] = (f"contaminated:{r['contaminated']}", str(r.get("contam_detail") or ""))
        else:
            clean.append((priority_key(r, source_order, trusted), r))
    if not clean:
        return out
    prios = np.asarray([p for p, _ in clean], dtype=object)
    keys = [exact_band_keys([r["exact_key"] for _, r in clean], bands)[:, None]] if exact else []
    sigs = _as_signatures([r["minhash"] for _, r in clean]) if near else np.zeros((len(clean), 0), np.uint32)
    if near:
        keys.append(band_keys(sigs, bands))
    if keys:
        grid = np.concatenate(keys, axis=1)
        pairs = bucket_pairs(grid.ravel(), np.repeat(np.arange(len(clean)), grid.shape[1]))
        members = {i for pair in pairs for i in pair}
        cand = {prios[i]: (clean[i][1]["exact_key"], sigs[i]) for i in sorted(members)}
        found, _ = candidate_decisions([(prios[a], prios[b]) for a, b in pairs], cand, exact=exact,
                                       threshold=threshold)
        out.update(found)
    return out
