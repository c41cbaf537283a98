"""The curation pipeline on a local Ray cluster (2 CPUs), on a small pool with known answers:
every planted duplicate, leak, failed trace, formatting problem and solved question is rejected
with its reason and nothing else is; the counts add up; the dataset loads; reruns redo only the
stages whose config or inputs changed; a failed stage leaves the earlier ones cached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s1ray.curation.config import CurationConfig
from s1ray.curation.pipeline import CurationError, Pipeline

from evaldata import eval_file

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "dedupe", "quality", "difficulty", "domains", "select", "export"]


def _words(rng, n):
    vocab = [f"w{i}" for i in range(2000)]
    return " ".join(rng.choice(vocab, n))


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write_traces(tdir: Path, units, rng) -> None:
    """Teacher traces in the trace job's layout (manifest.json + a shard), with the planted faults."""
    tdir.mkdir()
    traces = []
    for q in units:
        i = q["id"]
        if i == "p07":
            continue  # no_trace
        ans = q["answer"] if i != "t1" else "999"  # t1: the teacher is wrong -> not trusted
        t = {"id": i, "sample_index": 0, "thinking": _words(rng, 40 + 7 * len(traces)), "answer": f"So \\boxed{{{ans}}}.",
             "extracted_answer": ans, "error": None, "finish_reason": "stop", "thinking_tokens": 40 + 7 * len(traces)}
        if i == "p03":
            t.update(thinking="", answer="", extracted_answer=None, error="HTTP 500: overloaded", thinking_tokens=0)
        if i == "p04":
            t["finish_reason"] = "length"
        if i == "p05":
            t["thinking"] += "\n+----+----+\n|  a |  b |\n+----+----+\n"
        if i == "p08":  # sample 0 failed, sample 1 is good: sample 1 is used
            traces.append({**t, "thinking": "", "error": "timeout", "extracted_answer": None})
            t = {**t, "sample_index": 1, "thinking": "THE GOOD SAMPLE " + t["thinking"]}
        traces.append(t)
    _jsonl(tdir / "shard-00000.jsonl", traces)
    (tdir / "manifest.json").write_text(json.dumps({"version": 1, "shards": [{"file": "shard-00000.jsonl",
                                                                              "rows": len(traces)}]}))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    math500_file, aime24_file = eval_file("math500"), eval_file("aime24")
    tmp = tmp_path_factory.mktemp("cur")
    rng = np.random.default_rng(0)
    qs = [{"id": f"p{i:02d}", "problem": f"Problem {i}: {_words(rng, 30)}?", "answer": str(i),
           "topic": "alg" if i % 2 else "geo"} for i in range(24)]
    qs[6]["problem"] = "As shown in the figure, " + qs[6]["problem"]  # quality:missing_image
    math500 = json.loads(math500_file.read_text().splitlines()[7])["problem"]
    aime = json.loads(aime24_file.read_text().splitlines()[2])["problem"]
    plants = [
        {"id": "x-exact", "problem": qs[1]["problem"].upper() + "  ", "answer": "1", "topic": "alg"},
        {"id": "x-near", "problem": qs[2]["problem"].replace(" ", " indeed ", 1), "answer": "2", "topic": "geo"},
        {"id": "x-math500", "problem": math500, "answer": "0", "topic": "geo"},
        {"id": "x-aime24", "problem": "Please solve: " + aime, "answer": "0", "topic": "geo"},
        {"id": "x-empty", "problem": "  ", "answer": "0"},
        {"id": "p00", "problem": "Another question with a reused id", "answer": "0"},
    ]
    pool = _jsonl(tmp / "pool.jsonl", qs + plants)
    import pyarrow as pa

    trusted_rows = [{"id": "t0", "problem": f"Trusted one: {_words(rng, 20)}", "answer": "100"},
                    {"id": "t1", "problem": f"Trusted two: {_words(rng, 20)}", "answer": "101"}]
    pq.write_table(pa.Table.from_pylist(trusted_rows), tmp / "trusted.parquet")

    tdir = tmp / "traces"
    _write_traces(tdir, qs + plants[:4] + trusted_rows, rng)
    # a scripted solver: right on p10, p11 (1 of 2 samples); p13 "fourteen" only a judge accepts; no p12
    solver = []
    for q in qs + trusted_rows:
        i = q["id"]
        if i == "p12":
            continue
        for s in range(2):
            a = {"p10": "10", "p11": ["11", "-1"][s], "p13": "fourteen"}.get(i, "-1")
            if i == "p13":
                q["answer"] = "14"
            solver.append({"id": i, "sample_index": s, "extracted_answer": a})
    qs[13]["answer"] = "14"
    _jsonl(pool, qs + plants)
    solver_file = _jsonl(tmp / "solver.jsonl", solver)

    from test_curation_llm import FakeLLM

    judge = FakeLLM(lambda m: "Yes" if "## Attempt\nfourteen" in m[-1]["content"] else "No")
    cfg = {
        "name": "t", "output_dir": str(tmp / "out"),
        "sources": [
            {"name": "pool", "kind": "jsonl", "path": str(pool), "fields": {"question": "problem"}, "source": "pool"},
            {"name": "trusted", "kind": "parquet", "path": str(tmp / "trusted.parquet"),
             "fields": {"question": "problem"}, "source": "aime"},
        ],
        "decontamination": {"eval_sets": [{"name": "math500", "path": str(math500_file)},
                                          {"name": "aime24", "path": str(aime24_file)}]},
        "quality": {"traces": [{"kind": "traces_dir", "path": str(tdir)}],
                    "trusted": [{"source": "aime", "require_correct": True}]},
        "difficulty": {"solvers": [{"kind": "jsonl", "name": "scripted", "path": str(solver_file)}],
                       "judge": {"base_url": judge.base_url, "model": "fake-judge", "max_retries": 0}},
        "domains": {"method": "field", "field": "metadata.topic"},
        "selection": {"size": 100, "seed": 0},
        "batch_size": 8,
        "map_num_cpus": 0.5,
    }
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=400 * 1024**2, log_to_driver=False)
    yield {"cfg": cfg, "tmp": tmp, "judge": judge}
    ray.shutdown()
    judge.close()


EXPECTED = {
    "ingest": {"x-empty": "schema_error", "p00": "duplicate_id"},
    "dedupe": {"x-exact": "exact_duplicate", "x-near": "near_duplicate", "x-math500": "contaminated:math500",
               "x-aime24": "contaminated:aime24"},
    "quality": {"p03": "trace_error", "p04": "truncated", "p05": "quality:ascii_art", "p06": "quality:missing_image",
                "p07": "no_trace"},
    "difficulty": {"p10": "solved:scripted", "p11": "solved:scripted", "p12": "no_solver_output:scripted",
                   "p13": "solved:scripted"},
}


def _rows(d: Path) -> list[dict]:
    return [r for f in sorted(d.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _run(cfg: dict, **changes):
    c = json.loads(json.dumps(cfg))
    for k, v in changes.items():
        node = c
        *path, last = k.split("__")
        for p in path:
            node = node[p]
        node[last] = v
    return Pipeline(CurationConfig.model_validate(c)).run()


@pytest.fixture(scope="module")
def first(world):
    return _run(world["cfg"])


def test_each_stage_rejects_exactly_the_plants(world, first):
    out = Path(world["cfg"]["output_dir"])
    assert first.executed == STAGES
    for stage, want in EXPECTED.items():
        got = {r["id"]: r["reason"] for r in _rows(out / "stages" / stage / "rejects")}
        assert got == want, stage
    # the reused id: the first (source order) row keeps it
    kept = {r["id"]: r for r in _rows(out / "stages" / "ingest" / "kept")}
    assert kept["p00"]["question"].startswith("Problem 0:")
    # the judge was asked about the wrong rule-graded answers and accepted only "fourteen"
    assert first.stages["difficulty"]["solvers"]["scripted"]["judged"] > 0


def test_counts_add_up_and_report(world, first):
    rep = json.loads((Path(first.report_dir) / "report.json").read_text())
    assert rep["counts_consistent"], rep["count_problems"]
    st = rep["stages"]
    assert st["ingest"]["rows_in"] == 24 + 6 + 2
    for s in STAGES[:-1]:
        assert st[s]["rows_in"] == st[s]["rows_out"] + sum(st[s]["rejected"].values())
    assert st["export"]["rows"] == st["select"]["rows_out"] == st["domains"]["rows_out"]
    for png in ("domains.png", "trace_lengths.png"):
        assert (Path(first.report_dir) / png).stat().st_size > 1000
    md = (Path(first.report_dir) / "report.md").read_text()
    assert "| dedupe |" in md and "contaminated:math500: 1" in md


def test_exported_dataset(world, first):
    from s1ray.curation.export import load_s1k

    ds = load_s1k(first.dataset_dir)
    rows = {r["id"]: r for r in ds}
    survivors = {f"p{i:02d}" for i in range(24)} - set().union(*[set(v) for v in EXPECTED.values()]) | {"p00", "t0", "t1"}
    assert set(rows) == survivors
    assert rows["t0"]["selected_by"] == "trusted" and rows["t1"]["selected_by"] == "sampled"
    assert rows["p08"]["thinking"].startswith("THE GOOD SAMPLE")
    assert rows["p09"]["thinking_trajectories"] == [rows["p09"]["thinking"]]
    assert rows["p09"]["attempt"] == "So \\boxed{9}." and rows["p09"]["domain"] == "alg"
    meta = json.loads(rows["p09"]["metadata"])
    assert meta["topic"] == "alg" and meta["curation"]["solver_samples"] == 2
    assert (Path(first.dataset_dir) / "s1k.parquet").exists()
    q = pq.read_table(Path(world["cfg"]["output_dir"]) / "stages" / "dedupe" / "questions.parquet")
    assert q.num_rows == 30 - 4 and "ingest_source" not in q.column_names


def test_reruns_redo_only_what_changed(world, first):
    cfg = world["cfg"]
    again = _run(cfg)
    assert again.executed == [] and again.skipped == STAGES
    sel = _run(cfg, selection__method="longest", selection__size=5)
    assert sel.executed == ["select", "export"]
    assert sel.final_rows == 5
    q = _run(cfg, selection__method="longest", selection__size=5,
             quality__patterns=[{"name": "w1", "pattern": r"\bw1\b", "fields": ["question"]}])
    assert q.executed == ["quality", "difficulty", "domains", "select", "export"]
    # the default patterns were replaced: p05/p06 are back, questions containing w1 are gone
    rej = {r["id"]: r["reason"] for r in _rows(Path(cfg["output_dir"]) / "stages" / "quality" / "rejects")}
    assert "p05" not in rej and "p06" not in rej and set(rej.values()) <= {"trace_error", "truncated", "no_trace", "quality:w1"}


def test_failed_stage_keeps_earlier_stages(world, first):
    cfg = world["cfg"]
    with pytest.raises(CurationError, match="stage quality failed"):
        _run(cfg, quality__traces=[{"kind": "traces_dir", "path": str(world["tmp"] / "nope")}])
    out = Path(cfg["output_dir"]) / "stages"
    assert not list(out.glob(".*.tmp-*"))
    res = _run(cfg)
    assert res.skipped[:2] == ["ingest", "dedupe"] and "quality" in res.executed


def test_ray_data_dedupe_decides_as_the_pure_function_on_a_pool_of_chains(world):
    """Exact groups, band buckets, joins and components in Ray Data give the pure function's
    decisions, on a pool where near duplicates chain (A~B~C) and exact copies have near copies."""
    import ray.data

    from s1ray.curation import duplicates as D
    from s1ray.curation.stages.dedupe import DEDUPE_FEATURES, dedupe_in_ray_data
    from s1ray.curation.text import MinHasher, exact_key

    rng = np.random.default_rng(3)
    h = MinHasher(64, 0)
    rows = []
    for g in range(40):
        base = list(rng.choice([f"v{i}" for i in range(3000)], 30))
        for k in range(int(rng.integers(1, 5))):  # a chain: each copy shifts a few more words
            words = base[2 * k:] + [f"x{g}_{k}_{j}" for j in range(2 * k)]
            q = " ".join(words)
            rows.append({"id": f"g{g:02d}-{k}", "source": "s", "ingest_source": "src" if g % 3 else "other", "question": q})
            if k == 0 and g % 4 == 0:
                rows.append({**rows[-1], "id": f"g{g:02d}-copy", "question": q.upper()})
    rows.append({"id": "leak", "source": "s", "ingest_source": "src", "question": "leaked", "contaminated": "math500"})
    order, trusted = {"src": 0, "other": 1}, ["none"]
    feats = [{"id": r["id"], "priority": D.priority_key(r, order, trusted), "exact_key": exact_key(r["question"]),
              "minhash": h.of_text(r["question"], 3).tobytes(), "contaminated": r.get("contaminated"),
              "contam_detail": "8-gram" if r.get("contaminated") else None} for r in rows]
    expect = D.dedupe_decisions([{**f, **r} for f, r in zip(feats, rows)], bands=16, threshold=0.6,
                                source_order=order, trusted=trusted)
    assert {"exact_duplicate", "near_duplicate", "contaminated:math500"} <= {v[0] for v in expect.values()}
    table = pa.Table.from_pylist(feats, schema=DEDUPE_FEATURES)
    ds = ray.data.from_arrow([table.slice(i, 17) for i in range(0, table.num_rows, 17)])
    ref, sizes = dedupe_in_ray_data(ds, exact=True, near=True, bands=16, threshold=0.6, partitions=3)
    assert ray.get(ref) == expect
    assert sizes["edges"] > 0 and sizes["largest_component"] >= 3
