"""Curation benchmark: rows/s per stage of the real pipeline (Ray Data, local cluster)
on synthetic pools of 1k, 10k (and 100k) questions, and how each stage's time grows with size.

The pool is written as real inputs -- a jsonl question file, a trace job output dir (manifest +
parquet shards) and a solver jsonl (2 samples per question) -- so ingest, the trace join and
grading run the same code paths as a real run. Questions are distinct (~40 words each) with 5%
planted exact duplicates, 2% near duplicates, 10 MATH500 leaks, 3% failed traces, ~30% of
questions solved by the "solver"; domains come from a field (the embedding / LLM classifiers
measure the model, not the pipeline). Everything is CPU-only; on a shared 2-core machine the
absolute numbers move with the neighbours' load -- the growth ratios much less.

    python bench/bench_curation.py                      # 1k and 10k
    python bench/bench_curation.py --sizes 1000 10000 100000
    python bench/bench_curation.py --sizes --dedupe-rows 1000000   # only the dedupe comparison
                                                    # (-> bench/results/bench_dedupe.json)

``--dedupe-rows N``: the dedupe decisions over N synthetic rows (5% exact and 2% near copies),
made by the Ray Data stage and by the driver-side version it replaced (``_dedupe_before.py``),
side by side on the same features: rows/s, and the driver's peak RSS above its level before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
STAGES = ["ingest", "dedupe", "quality", "difficulty", "domains", "select", "export"]


def make_pool(n: int, out: Path, seed: int = 0) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    vocab = np.array([f"t{i}" for i in range(5000)] + [str(i) for i in range(100)])
    words = rng.choice(vocab, (n, 40))
    qs = []
    for i in range(n):
        qs.append({"id": f"b{i:07d}", "problem": f"Question {i}: " + " ".join(words[i]) + "?",
                   "answer": str(i % 1000), "topic": f"d{i % 12}"})
    m500 = [json.loads(x)["problem"] for x in (SHARED / "math500.jsonl").read_text().splitlines()[:10]]
    for k in range(int(0.05 * n)):  # exact duplicates
        src = qs[k * 7 % n]
        qs.append({**src, "id": f"dup{k:07d}", "problem": src["problem"].upper()})
    for k in range(int(0.02 * n)):  # near duplicates
        src = qs[k * 11 % n]
        qs.append({**src, "id": f"near{k:07d}", "problem": src["problem"].replace(" ", " also ", 1)})
    for k, q in enumerate(m500):
        qs.append({"id": f"leak{k}", "problem": q, "answer": "0", "topic": "d0"})
    with (out / "pool.jsonl").open("w") as f:
        for q in qs:
            f.write(json.dumps(q) + "\n")
    tdir = out / "traces"
    tdir.mkdir()
    lengths = rng.integers(50, 400, len(qs))
    think_vocab = vocab[:500]
    shards, rows = [], []
    for i, q in enumerate(qs):
        err = i % 33 == 5
        rows.append({"id": q["id"], "sample_index": 0,
                     "thinking": "" if err else " ".join(rng.choice(think_vocab, int(lengths[i]))),
                     "answer": "" if err else f"The answer is \\boxed{{{q['answer']}}}.",
                     "extracted_answer": None if err else q["answer"], "error": "HTTP 500" if err else None,
                     "finish_reason": None if err else "stop", "thinking_tokens": 0 if err else int(lengths[i])})
        if len(rows) == 5000 or i == len(qs) - 1:
            name = f"shard-{len(shards):05d}.parquet"
            pq.write_table(pa.Table.from_pylist(rows), tdir / name)
            shards.append({"file": name, "rows": len(rows)})
            rows = []
    (tdir / "manifest.json").write_text(json.dumps({"version": 1, "shards": shards}))
    with (out / "solver.jsonl").open("w") as f:
        for i, q in enumerate(qs):
            for s in range(2):
                right = i % 10 < 3 and s == 0
                f.write(json.dumps({"id": q["id"], "sample_index": s,
                                    "extracted_answer": q["answer"] if right else "-7"}) + "\n")
    return {"questions": len(qs)}


def config(out: Path, work: Path, size: int) -> dict:
    return {
        "name": f"bench{size}", "output_dir": str(out),
        "sources": [{"name": "pool", "kind": "jsonl", "path": str(work / "pool.jsonl"), "fields": {"question": "problem"},
                     "source": "bench"}],
        "decontamination": {"eval_sets": [{"name": "math500", "path": str(SHARED / "math500.jsonl")},
                                          {"name": "aime24", "path": str(SHARED / "aime24.jsonl")}]},
        "quality": {"traces": [{"kind": "traces_dir", "path": str(work / "traces")}]},
        "difficulty": {"solvers": [{"kind": "jsonl", "name": "solver", "path": str(work / "solver.jsonl")}]},
        "domains": {"method": "field", "field": "metadata.topic"},
        "selection": {"size": 1000, "seed": 0},
        "batch_size": 1024,
        "map_num_cpus": 0.5,
    }


class PeakRSS:
    """The driver's peak resident memory while the block runs, sampled every 20 ms."""

    def __enter__(self):
        import threading

        import psutil

        self.proc, self.stop = psutil.Process(), threading.Event()
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grew_mb(self) -> float:
        return round((self.peak - self.base) / 2**20, 1)


def bench_dedupe(n: int, bands: int = 32, threshold: float = 0.8) -> dict:
    import ray
    import ray.data

    import _dedupe_before as before
    from s1ray.curation.stages.dedupe import DEDUPE_FEATURES, ROWS_PER_PARTITION, dedupe_in_ray_data

    t0 = time.perf_counter()
    feats = ray.data.range(n, override_num_blocks=max(2, n // 20000)).map_batches(
        before.features_batch, fn_kwargs={"num_perm": 128, "shingle": 3}, batch_size=4096).materialize()
    features_s = time.perf_counter() - t0
    partitions = max(2, min(64, n // ROWS_PER_PARTITION))
    with PeakRSS() as new_rss:
        t0 = time.perf_counter()
        ref, sizes = dedupe_in_ray_data(feats.select_columns(DEDUPE_FEATURES.names), exact=True, near=True,
                                        bands=bands, threshold=threshold, partitions=partitions)
        new_s = time.perf_counter() - t0
    with PeakRSS() as old_rss:
        t0 = time.perf_counter()
        rows = []
        for b in feats.iter_batches(batch_format="pyarrow", batch_size=1024):
            rows.extend(b.to_pylist())
        old = before.driver_dedupe(rows, bands=bands, threshold=threshold, source_order={"pool": 0})
        old_s = time.perf_counter() - t0
        del rows
    new = ray.get(ref)
    reasons = {r: sum(1 for v in new.values() if v[0] == r) for r in sorted({v[0] for v in new.values()})}
    out = {"rows": n, "features_s": round(features_s, 1), "partitions": partitions, "same_decisions": new == old,
           "dropped": reasons, "graph": sizes,
           "ray_data": {"s": round(new_s, 1), "rows_per_s": round(n / new_s), "driver_rss_grew_mb": new_rss.grew_mb},
           "driver": {"s": round(old_s, 1), "rows_per_s": round(n / old_s), "driver_rss_grew_mb": old_rss.grew_mb}}
    print(f"\n== dedupe of {n} rows (features {features_s:.0f} s, shared): same decisions: {new == old}; dropped {reasons}")
    print(f"{'version':<11}{'s':>8}{'rows/s':>10}{'driver RSS +MB':>16}")
    for k in ("ray_data", "driver"):
        print(f"{k:<11}{out[k]['s']:>8.1f}{out[k]['rows_per_s']:>10}{out[k]['driver_rss_grew_mb']:>16.1f}")
    return out


def dedupe_report(d: dict) -> dict:
    """The JSON of ``--dedupe-rows`` for bench/report.py: headline ratios and one row per version."""
    ratios = {"dedupe rows/s, Ray Data / driver-side": round(d["ray_data"]["rows_per_s"] / d["driver"]["rows_per_s"], 2),
              "driver RSS growth, driver-side / Ray Data": round(
                  d["driver"]["driver_rss_grew_mb"] / max(d["ray_data"]["driver_rss_grew_mb"], 1.0), 1)}
    table = [{"version": k, "rows": d["rows"], "seconds": d[k]["s"], "rows_per_s": d[k]["rows_per_s"],
              "driver_rss_grew_mb": d[k]["driver_rss_grew_mb"], "same_decisions": d["same_decisions"]}
             for k in ("ray_data", "driver")]
    return {"bench": "curation_dedupe", "ratios": ratios, "table": table, "dedupe": d}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    p.add_argument("--dedupe-rows", type=int, default=0, help="also compare the dedupe versions on this many rows")
    p.add_argument("--dedupe-out", default=str(ROOT / "bench" / "results" / "bench_dedupe.json"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_curation.json"))
    args = p.parse_args()

    import ray

    from s1ray.curation.config import CurationConfig
    from s1ray.curation.pipeline import Pipeline

    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             object_store_memory=(4096 if args.dedupe_rows else 1024) * 1024**2)
    results, dedupe = {}, None
    try:
        if args.dedupe_rows:
            dedupe = bench_dedupe(args.dedupe_rows)
        for n in args.sizes:
            work = Path(tempfile.mkdtemp(prefix=f"s1ray-bench-cur{n}-"))
            try:
                t0 = time.perf_counter()
                info = make_pool(n, work)
                gen_s = time.perf_counter() - t0
                res = Pipeline(CurationConfig.model_validate(config(work / "out", work, n))).run()
                stages = {s: {k: res.stages[s].get(k) for k in ("rows_in", "rows_out", "elapsed_s", "rows_per_s")}
                          for s in STAGES}
                t1 = time.perf_counter()
                cached = Pipeline(CurationConfig.model_validate(config(work / "out", work, n))).run()
                rerun_s = time.perf_counter() - t1
                assert cached.executed == []
                results[n] = {"pool_rows": info["questions"], "generate_inputs_s": round(gen_s, 1),
                              "total_s": res.elapsed_s, "final_rows": res.final_rows, "cached_rerun_s": round(rerun_s, 2),
                              "stages": stages}
                print(f"\n== {n} questions ({info['questions']} rows with plants): {res.elapsed_s:.1f} s, "
                      f"cached rerun {rerun_s:.1f} s", flush=True)
                print(f"{'stage':<11}{'rows in':>9}{'rows out':>10}{'s':>8}{'rows/s':>10}")
                for s, st in stages.items():
                    print(f"{s:<11}{st['rows_in']:>9}{st['rows_out']:>10}{st['elapsed_s']:>8.1f}{st['rows_per_s']:>10.0f}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        ray.shutdown()
    sizes = sorted(results)
    growth = {}
    for a, b in zip(sizes, sizes[1:]):
        growth[f"{b}/{a}"] = {s: round(results[b]["stages"][s]["elapsed_s"] / max(results[a]["stages"][s]["elapsed_s"], 1e-9), 2)
                              for s in STAGES}
        growth[f"{b}/{a}"]["total"] = round(results[b]["total_s"] / results[a]["total_s"], 2)
        print(f"\ntime growth {b}/{a} (x{b // a} rows): " + ", ".join(f"{k} x{v}" for k, v in growth[f'{b}/{a}'].items()))
    from _common import write_json

    ratios = {f"time {k} (x{int(k.split('/')[0]) // int(k.split('/')[1])} rows)": v["total"] for k, v in growth.items()}
    table = [{"rows": n, "total_s": r["total_s"], **{f"{s}_s": r["stages"][s]["elapsed_s"] for s in STAGES}}
             for n, r in sorted(results.items())]
    if results:
        write_json(args.out, {"bench": "curation", "ratios": ratios, "table": table, "results": results, "growth": growth})
    if dedupe:
        write_json(args.dedupe_out, dedupe_report(dedupe))
    return 0


if __name__ == "__main__":
    sys.exit(main())
