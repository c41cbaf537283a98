"""Storage on the production topology in miniature (tests/cluster_fixtures.py): S3 through
pyarrow, a node-local path refused on a 2-node cluster, and a Ray Data job whose tasks run on
both nodes and write to S3; the stage store, eval sweeps and the loaders' local copies on S3."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_fixtures import s3_server, two_nodes, wait_for  # noqa: F401  (fixtures)

from s1ray.config import ConfigError
from s1ray.storage import SHARED_ENV, STORAGE_ENV, Location, check_shared, resolve_output

ROOT = Path(__file__).resolve().parents[1]

# `ray` too: they start Ray, so the unit tier (-m "not vllm and not ray") leaves them out.
pytestmark = [pytest.mark.cluster, pytest.mark.ray]


def test_storage_round_trip_on_s3(s3_server, monkeypatch):
    from s1ray.traces.output import ShardWriter, read_manifest, read_traces

    monkeypatch.setenv(STORAGE_ENV, s3_server.uri("s1ray"))
    where = resolve_output("runs/traces/t", "output_dir")
    assert where == s3_server.uri("s1ray/runs/traces/t")
    loc = Location(where)
    loc.write_text("hello.txt", "hi")
    assert loc.exists("hello.txt") and not loc.exists("nope") and loc.read_text("hello.txt") == "hi"
    rows = [{"id": f"q{i}", "sample_index": 0, "question": f"t{i}", "error": None} for i in range(5)]
    for fmt in ("parquet", "jsonl"):
        out = f"{where}-{fmt}"
        w = ShardWriter(out, fmt, shard_size=2, generation={"teacher": "x"})
        w.extend(rows)
        w.flush()
        assert [s["rows"] for s in read_manifest(out)["shards"]] == [2, 2, 1]
        got = read_traces(out)
        assert [(r["id"], r["question"]) for r in got] == [(r["id"], r["question"]) for r in rows]
        # a rerun resumes from the manifest on S3: every key is done, nothing is added
        again = ShardWriter(out, fmt, shard_size=2, generation={"teacher": "x"})
        assert len(again.done) == 5 and not again.add(rows[0])
        assert sorted(Location(out).names()) == ["manifest.json", *(f"shard-{i:05d}.{fmt}" for i in range(3))]


def test_loaders_read_s3_through_one_local_copy_per_node(s3_server, tmp_path, monkeypatch):
    """Models and datasets on S3 (an SFT export, a curated set) load through a local copy:
    made once, reused while the objects are unchanged, made again when they are rewritten."""
    from s1ray.dataio import DataError, load_records, replace_dir, write_text_atomic
    from s1ray.dataio import CACHE_ENV, local_copy
    from s1ray.storage import check_model

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    model = s3_server.uri("copies", "model")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "weights.bin").write_bytes(b"w1")
    with pytest.raises(ConfigError, match=r"^engine.model: .* holds no config.json"):
        check_model(model, "engine.model")
    (staged / "config.json").write_text("{}")
    replace_dir(staged, model, last=("config.json",))
    assert check_model(model, "engine.model") == model
    first = local_copy(model)
    assert sorted(p.name for p in Path(first).iterdir()) == ["config.json", "weights.bin"]
    assert local_copy(model) == first  # unchanged: the same copy
    write_text_atomic(f"{model}/weights.bin", "w2, rewritten")  # another size: S3's mtime has 1 s steps
    second = local_copy(model)
    assert second != first and (Path(second) / "weights.bin").read_text() == "w2, rewritten"
    data = s3_server.uri("copies", "rows.jsonl")
    write_text_atomic(data, '{"q": 1}\n{"q": 2}\n')
    assert load_records(data, where="dataset.source") == [{"q": 1}, {"q": 2}]
    with pytest.raises(DataError, match=r"^dataset.source: 's3://.*/nope.jsonl' cannot be read"):
        load_records(s3_server.uri("copies", "nope.jsonl"), where="dataset.source")
    assert local_copy("/a/local/path") == "/a/local/path" and local_copy("Qwen/Qwen2.5-7B") == "Qwen/Qwen2.5-7B"


def test_a_stage_on_s3_counts_as_done_only_when_whole(s3_server, monkeypatch):
    """Curation's stage store on S3: a commit replaces the stage's old objects and uploads the
    marker last, after deleting the old marker first, so an upload that dies midway (a fault
    injected at pyarrow's copy) leaves a stage that is not done rather than a mix."""
    import pyarrow.fs as pafs

    from s1ray.curation.store import StageStore

    store = StageStore(s3_server.uri("stores", "a"))

    def commit(name: str, fp: str):
        tmp = store.begin("dedupe")
        (tmp / "kept").mkdir()
        (tmp / "kept" / name).write_bytes(b"x")
        store.commit("dedupe", tmp, fp, {"rows_in": 1})
        assert not tmp.exists()

    commit("old.parquet", "fp1")
    assert store.is_done("dedupe", "fp1") and Location(store.kept("dedupe")).names() == ["old.parquet"]
    real = pafs.copy_files

    def dies_midway(*args, **kwargs):
        raise OSError("injected: the connection dropped")

    monkeypatch.setattr(pafs, "copy_files", dies_midway)
    with pytest.raises(OSError, match="injected"):
        commit("new.parquet", "fp2")
    assert store.marker("dedupe") is None  # neither the old stage nor half of the new one
    monkeypatch.setattr(pafs, "copy_files", real)
    commit("new.parquet", "fp2")
    assert store.is_done("dedupe", "fp2") and Location(store.kept("dedupe")).names() == ["new.parquet"]


def test_eval_sweep_writes_to_s3_and_resumes_there(s3_server, tmp_path, monkeypatch):
    """An eval sweep with S1RAY_STORAGE=s3://...: the sample log is one object per batch (S3 has no
    append), reports and plots land beside it, a rerun generates only what failed, and the
    metrics equal the same sweep's on a local directory. (Generation is the sweep tests' scripted
    backend: what is under test is the storage.)"""
    from test_eval_sweep import ScriptedBackend, sums_file

    from s1ray.eval.config import EvalConfig
    from s1ray.eval.samples import PARTS_DIR, read_samples
    from s1ray.eval.sweep import SetupMismatch, run_sweep

    sums = sums_file(tmp_path)
    spec = {"name": "s3", "datasets": [{"name": "sums", "path": str(sums)}], "methods": ["budget_forcing"],
            "budgets": [16, 48], "n_votes": [1, 3], "base_url": "http://unused", "output_dir": "runs/eval/{name}",
            "progress": False, "flush_every": 3}
    monkeypatch.setenv(STORAGE_ENV, s3_server.uri("s1ray"))
    cfg = EvalConfig.model_validate(spec)
    first = run_sweep(cfg, backend=ScriptedBackend(fail_on=3))
    out = s3_server.uri("s1ray", "runs", "eval", "s3")
    assert first.output_dir == out and first.failed == 5 and first.generated == 15
    loc = Location(out)
    assert {"run.json", "metrics.md", "metrics.csv", "points.csv", "voting.csv", "accuracy_vs_thinking.png",
            "voting_vs_forcing.png", "samples.parquet"} <= set(loc.names())
    assert loc.read_bytes("accuracy_vs_thinking.png")[:8] == b"\x89PNG\r\n\x1a\n"
    parts = Location(f"{out}/{PARTS_DIR}").names()
    assert len(parts) == 5 and len(read_samples(out)) == 15  # 15 samples in batches of 3
    again = ScriptedBackend()
    second = run_sweep(cfg, backend=again)
    assert (second.skipped, second.generated, second.failed, again.calls) == (15, 5, 0, 5)
    assert run_sweep(cfg, backend=ScriptedBackend()).generated == 0
    with pytest.raises(SetupMismatch, match="temperature"):
        run_sweep(EvalConfig.model_validate({**spec, "temperature": 0.5}), backend=ScriptedBackend())
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "local"))
    local = run_sweep(cfg, backend=ScriptedBackend())
    assert local.method_rows == second.method_rows and local.vote_rows == second.vote_rows
    assert "| budget_forcing |" in loc.read_text("metrics.md")


def test_the_paper_stage_reads_and_writes_s3(s3_server, monkeypatch):
    """The paper stage's own storage steps on an s3:// work dir: a student's copy of the
    pipeline's curation is made once, and a copy cut short (a fault injected at pyarrow's copy)
    leaves no marker, so it is made again; the curated set's rows are counted on S3; the report
    and its plots land there. (The experiments themselves are tests/test_paper.py's, on a local
    work dir: the stage's code is the same, with every path through PipelineRunner.at.)"""
    import json

    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from test_paper_report import seq, vote

    from s1ray.config import load_config
    from s1ray.dataio import atomic_write
    from s1ray.pipeline.config import PipelineConfig
    from s1ray.pipeline.paper import COPIED, _curated_rows, seed_curation, write_paper
    from s1ray.pipeline.paper_report import build_report
    from s1ray.pipeline.run import PipelineRunner

    work = s3_server.uri("paper-work")
    runner = PipelineRunner(load_config(PipelineConfig, ROOT / "configs/pipeline/paper.yaml", [f"work_dir={work}"]))
    assert runner.remote and runner.at("curation") == f"{work}/curation"
    table = pa.table({"question": [f"q{i}" for i in range(5)]})
    atomic_write(f"{work}/curation/dataset/s1k.parquet", lambda tmp: pq.write_table(table, tmp))
    Location(f"{work}/curation/stages/dedupe").write_text("marker.json", "pipeline")
    home = f"{work}/paper/students/random"
    real = pafs.copy_files

    def cut_short(*a, **kw):
        raise OSError("injected: the copy died midway")

    monkeypatch.setattr(pafs, "copy_files", cut_short)
    with pytest.raises(OSError, match="injected"):
        seed_curation(runner.at("curation"), home)
    assert not Location(home).exists(COPIED)
    monkeypatch.setattr(pafs, "copy_files", real)
    cur = seed_curation(runner.at("curation"), home)
    assert cur == f"{home}/curation" and Location(home).exists(COPIED)
    assert _curated_rows(f"{cur}/dataset/s1k.parquet") == 5
    Location(f"{cur}/stages/dedupe").write_text("marker.json", "the student's own")  # its curation moved on
    seed_curation(runner.at("curation"), home)
    assert Location(f"{cur}/stages/dedupe").read_text("marker.json") == "the student's own"  # made once

    samples = [seq("budget_forcing", b, q, q < b // 8, min(b, 10), cap=b) for b in (8, 16) for q in range(4)]
    samples += [vote(q, i, "1", 3) for q in range(4) for i in range(2)]
    waits = [seq("budget_forcing", "w", q, q == 0, 5 + w, budget_num_waits=w, num_waits=w) for w in (0, 1)
             for q in range(2)]
    students = [{"selection": "random", "n_train": 5, "budget": {"max": 16}, "samples": samples[:4]}]
    report = build_report(samples, ["budget_forcing"], [1, 2], waits, students)
    png = b"\x89PNG\r\n\x1a\n the eval sweep's plot"
    Location(f"{work}/eval").write_bytes("accuracy_vs_thinking.png", png)
    res = write_paper(report, runner.work, f"{work}/eval/accuracy_vs_thinking.png")
    out = Location(work)
    assert res["report"] == f"{work}/report.md" and res["plots"]["methods"] == f"{work}/methods.png"
    assert {"report.md", "report.json", "methods.png", "parallel_vs_sequential.png", "extrapolation.png"} <= set(out.names())
    assert out.read_bytes("methods.png") == png
    assert out.read_bytes("extrapolation.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.read_text("report.json")) == json.loads(json.dumps(report))
    assert "methods.png" in out.read_text("report.md")


def test_node_local_storage_is_refused_on_two_nodes(two_nodes, tiny_model_dir, tmp_path, monkeypatch):
    from s1ray.train.config import TrainConfig
    from s1ray.train.toy import write_toy_dataset
    from s1ray.train.trainer import run

    monkeypatch.delenv(SHARED_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"^output_dir: '/x/out' is a local path and this Ray cluster has 2 nodes"):
        check_shared("/x/out", "output_dir")
    check_shared("s3://b/out", "output_dir")  # a URI every node reaches
    cfg = TrainConfig(name="refused", model=tiny_model_dir, num_workers=2, use_gpu=False, block_size=512,
                      global_batch_size=2, max_steps=1, storage_path=str(tmp_path / "runs"),
                      dataset={"source": str(write_toy_dataset(tmp_path / "toy.jsonl", 4))})
    with pytest.raises(ConfigError, match=r"^storage_path: .* local path and this Ray cluster has 2 nodes.*"
                                          + SHARED_ENV + "=1"):
        run(cfg, echo=lambda *_: None)
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    monkeypatch.setenv(SHARED_ENV, "1")  # the opt-in for an NFS/EFS mount every node sees
    check_shared("/x/out", "output_dir")


def test_ray_data_job_across_two_nodes_writes_to_s3(two_nodes, s3_server):
    import pyarrow.dataset as pads
    import ray

    def tag(batch):
        batch["node"] = [ray.get_runtime_context().get_node_id()] * len(batch["id"])
        return batch

    out = s3_server.uri("data", "tagged")
    ds = ray.data.range(40, override_num_blocks=4).map_batches(
        tag, batch_format="numpy", num_cpus=1, scheduling_strategy="SPREAD")
    ds.write_parquet(out)
    fs = s3_server.filesystem()
    table = pads.dataset(out.removeprefix("s3://"), filesystem=fs, format="parquet").to_table()
    assert sorted(table.column("id").to_pylist()) == list(range(40))  # every row exactly once
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert set(table.column("node").to_pylist()) == alive and len(alive) == 2


RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train v2's record of the registered checkpoints


def test_sft_across_two_nodes_resumes_from_s3_after_a_node_is_lost(two_nodes, s3_server, tiny_model_dir, tmp_path):
    """One ZeRO-3 worker per node (gloo), checkpoints on S3. The faulty run stops at step 5 (after
    the step-4 checkpoint); the test then removes the non-head node, as a lost spot instance, and
    adds a replacement: Ray Train restarts the group there, resumes from the S3 checkpoint, and
    the per-step losses equal the uninterrupted run's."""
    import json
    import os
    import threading
    from pathlib import Path

    from s1ray.train.config import TrainConfig
    from s1ray.train.toy import write_toy_dataset
    from s1ray.train.trainer import run

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))
    base = dict(model=tiny_model_dir, dataset={"source": str(write_toy_dataset(tmp_path / "toy.jsonl", 16))},
                block_size=512, num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}, global_batch_size=4,
                epochs=2, lr=1e-3, warmup_ratio=0.1, storage_path=s3_server.uri("runs", "train"),
                checkpoint_every_steps=4, deterministic=True, zero_stage=3, bf16=True, max_failures=1,
                logging={"report_every": 4}, torch_extensions_dir=os.environ["TORCH_EXTENSIONS_DIR"])
    quiet = lambda *_: None  # noqa: E731
    clean = run(TrainConfig(name="clean", **base), echo=quiet)

    marker = tmp_path / "fault.json"
    outcome: dict = {}

    def faulty():
        try:
            outcome["run"] = run(TrainConfig(name="lost", fault_injection={"step": 5, "rank": 1, "marker": str(marker),
                                                                            "action": "hang"}, **base), echo=quiet)
        except BaseException as e:  # handed to the test thread below
            outcome["error"] = e

    thread = threading.Thread(target=faulty, daemon=True)
    thread.start()
    wait_for(marker.exists, "step 5 of the faulty run", alive=thread.is_alive)
    assert json.loads(marker.read_text())["step"] == 5
    # Ray Train registers a reported checkpoint when its controller polls (then it writes this
    # snapshot to storage): until then a restart would begin from scratch.
    run_dir = Location(s3_server.uri("runs", "train", "lost"))

    def step4_registered() -> bool:
        if not run_dir.exists(RAY_SNAPSHOT):
            return False
        return any(r["metrics"].get("step") == 4
                   for r in json.loads(run_dir.read_text(RAY_SNAPSHOT))["checkpoint_results"])

    wait_for(step4_registered, "the step-4 checkpoint registered on S3", alive=thread.is_alive)
    (lost,) = [n for n in two_nodes.list_all_nodes() if n is not two_nodes.head_node]
    two_nodes.remove_node(lost)  # the worker on it dies; the other one is stuck in a collective
    two_nodes.add_node(num_cpus=1, object_store_memory=80 * 1024**2, resources={"node2": 1})  # the replacement
    thread.join(600)
    assert not thread.is_alive(), "the run did not finish after the replacement node joined"
    if "error" in outcome:
        raise outcome["error"]
    lost_run = outcome["run"]
    assert clean.checkpoint.startswith("s3://") and lost_run.checkpoint.startswith("s3://")

    def meta(r):
        return json.loads(Location(r.checkpoint).read_text("s1ray_meta.json"))

    a, b = meta(clean), meta(lost_run)
    assert b["resumed_from"] == [4]  # restarted once, from the step-4 checkpoint on S3
    assert [h["step"] for h in b["history"]] == list(range(1, 9))
    assert [h["loss"] for h in b["history"]] == [h["loss"] for h in a["history"]]
