"""The driver-side dedupe that the Ray Data stage replaced, kept as the baseline of
``bench_curation.py --dedupe-rows`` and as the reference its tests compare against: every row's
id, key and signature collected on the driver, then one greedy pass in priority order over LSH
buckets of kept rows. Plus a synthetic pool of dedupe features, made inside Ray tasks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

WORDS = np.array([f"t{i}" for i in range(5000)])


def driver_dedupe(rows: Sequence[Mapping[str, Any]], *, exact: bool = True, near: bool = True, bands: int = 16,
                  threshold: float = 0.8, source_order: Mapping[str, int] | None = None,
                  trusted: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
    from s1ray.curation.duplicates import keep_priority

    source_order = source_order or {}
    out: dict[str, tuple[str, str]] = {}
    order = sorted(range(len(rows)), key=lambda i: keep_priority(rows[i], source_order, trusted))
    seen_exact: dict[str, str] = {}
    kept_sigs: list[np.ndarray] = []
    kept_ids: list[str] = []
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i in order:
        r = rows[i]
        rid = str(r["id"])
        if r.get("contaminated"):
            out[rid] = (f"contaminated:{r['contaminated']}", str(r.get("contam_detail") or ""))
            continue
        if exact:
            k = r["exact_key"]
            if k in seen_exact:
                out[rid] = ("exact_duplicate", f"of {seen_exact[k]}")
                continue
            seen_exact[k] = rid
        if not near:
            continue
        sig = r["minhash"]
        sig = np.frombuffer(sig, dtype=np.uint32) if isinstance(sig, (bytes, bytearray)) else np.asarray(sig, np.uint32)
        width = len(sig) // bands
        keys = [(b, sig[b * width : (b + 1) * width].tobytes()) for b in range(bands)]
        cands = sorted({j for key in keys for j in buckets.get(key, ())})
        if cands:
            sims = (np.stack([kept_sigs[j] for j in cands]) == sig).mean(axis=1)
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                out[rid] = ("near_duplicate", f"of {kept_ids[cands[best]]} (J~{sims[best]:.2f})")
                continue
        idx = len(kept_ids)
        kept_ids.append(rid)
        kept_sigs.append(sig)
        for key in keys:
            buckets[key].append(idx)
    return out


def question(i: int) -> str:
    """Row ``i``'s question; every 20th copies its predecessor (case and spaces changed), every
    50th is its third predecessor with one word added (a near duplicate)."""
    if i % 20 == 19:
        return "  " + question(i - 1).upper()
    if i % 50 == 37:
        return question(i - 3).replace(" ", " also ", 1)
    return f"Question {i}: " + " ".join(np.random.default_rng(i).choice(WORDS, 40)) + "?"


def features_batch(batch: dict, num_perm: int, shingle: int) -> dict:
    """The dedupe features (:data:`s1ray.curation.stages.dedupe.DEDUPE_FEATURES`, plus the
    source columns the driver-side version reads) of the synthetic rows ``batch["id"]``."""
    from s1ray.curation.duplicates import priority_key
    from s1ray.curation.text import MinHasher, exact_key

    hasher = MinHasher(num_perm, 0)
    cols: dict[str, list] = {k: [] for k in ("id", "source", "ingest_source", "priority", "exact_key", "minhash")}
    for i in batch["id"].tolist():
        q = question(i)
        row = {"id": f"q{i:08d}", "source": "bench", "ingest_source": "pool"}
        for k, v in row.items():
            cols[k].append(v)
        cols["priority"].append(priority_key(row, {"pool": 0}, []))
        cols["exact_key"].append(exact_key(q))
        cols["minhash"].append(hasher.of_text(q, shingle).tobytes())
    cols["contaminated"] = [None] * len(cols["id"])
    cols["contam_detail"] = [None] * len(cols["id"])
    return cols
