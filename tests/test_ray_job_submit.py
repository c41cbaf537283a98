"""`ray job submit --working-dir .` as the docs write it, against a local 2-node Ray cluster this
test starts (`ray start --head` and `ray start --address`, 1 CPU each, their own ports and temp
dir) and stops (its own processes only), beside a moto S3 (tests/cluster_fixtures.py) whose
`AWS_*` variables the nodes inherit, as `cluster.yaml`'s nodes get theirs.

The working dir is a copy of the checkout as git sees it, plus what a user's checkout also has
beside the tracked files: a local model under `.tiny/`, a `.venv/`, `runs/` and caches. What Ray
uploads is listed by a job; the eval of a model that exists only on the submitting machine fails
on the driver with the line that says what to do; node-local storage is refused on two nodes;
(a reduced) pipeline miniature with its work dir on S3 writes every output there: curation, SFT
across the two nodes (checkpoints and HF export), and the eval of that export, read from S3.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cluster_fixtures import s3_server  # noqa: F401  (fixture)
from test_plain_clone import checkout_copy

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(2400)]  # a crowded 2-core box is slow

RAY = str(Path(sys.executable).with_name("ray"))
SHARED_DATA = os.environ.get("S1RAY_DATA_DIR")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cluster_env() -> dict[str, str]:
    drop = {"PYTHONPATH", "S1RAY_DATA_DIR", "S1RAY_STORAGE", "RAY_ADDRESS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", RAY_AUTH_MODE="disabled",
               VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1",
               # a loaded 2-core CI box: the raylet waits for the dashboard agent longer than its default
               RAY_agent_register_timeout_ms="300000")
    return env


def start_head() -> tuple[subprocess.Popen, str, int, str, int]:
    temp = tempfile.mkdtemp(prefix="s1rj", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dash, agent_http, agent_grpc, client, rt_agent, metrics, nm, om = free_ports(9)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--ray-client-server-port={client}",
         f"--runtime-env-agent-port={rt_agent}", f"--metrics-export-port={metrics}", f"--node-manager-port={nm}",
         f"--object-manager-port={om}", "--num-cpus=1", f"--object-store-memory={300 * 1024**2}",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=cluster_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return head, f"http://127.0.0.1:{dash}", agent_http, temp, gcs


def start_worker(gcs: int) -> tuple[subprocess.Popen, str]:
    """A second node joining the head, as `ray start --address` on a worker machine does, with
    its own temp dir as another machine has: sharing the head's, the two nodes' runtime-env
    agents shared one runtime_resources/, and a job's first ray.init had the worker's agent
    unpack the job's working dir again under the entrypoint running from it on the head."""
    agent_http, agent_grpc, rt_agent, metrics, nm, om = free_ports(6)
    temp = tempfile.mkdtemp(prefix="s1rw", dir="/tmp")
    return subprocess.Popen(
        [RAY, "start", "--block", f"--address=127.0.0.1:{gcs}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_agent}",
         f"--metrics-export-port={metrics}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
         "--num-cpus=1", f"--object-store-memory={300 * 1024**2}", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=cluster_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True), temp


def alive_nodes(address: str) -> int:
    from ray.util.state import list_nodes

    try:
        return len(list_nodes(address=address, filters=[("state", "=", "ALIVE")]))
    except Exception:
        return 0


def stop_head(head: subprocess.Popen, temp: str | None) -> None:
    """Only this cluster's processes: the blocking `ray start` and everything below it (never
    `ray stop`, which stops every Ray on the machine)."""
    import psutil

    try:
        procs = psutil.Process(head.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    head.terminate()
    # A process that ignores SIGTERM is this test's own to kill (waiting longer changes nothing).
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(timeout=10)
    if temp is not None:
        shutil.rmtree(temp, ignore_errors=True)


def jobs_api_up(head: subprocess.Popen, address: str, agent_port: int, timeout: float = 300) -> bool:
    """Poll until the Jobs API and the head's dashboard agent both answer (True), or `ray start
    --block` exits (False): on a crowded machine the raylet can give up on a slow dashboard agent,
    and the head then stops itself."""
    import urllib.request

    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    while head.poll() is None and time.monotonic() < deadline:
        try:
            JobSubmissionClient(address).list_jobs()
            with urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/api/healthz", timeout=10) as r:
                if r.status == 200 and head.poll() is None:
                    return True
        except Exception:
            pass
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def cluster(s3_server):
    """The head, then a worker node; both started after the S3 server, so they carry its AWS_*."""
    for _attempt in range(4):
        head, address, agent_port, temp, gcs = start_head()
        if jobs_api_up(head, address, agent_port):
            break
        stop_head(head, temp)
    else:
        pytest.fail("a local Ray head with the Jobs API did not come up in 4 attempts")
    worker, worker_temp = start_worker(gcs)
    try:
        from cluster_fixtures import wait_for

        wait_for(lambda: alive_nodes(address) == 2, "the second node registered", timeout=300,
                 alive=lambda: worker.poll() is None)
        yield address
    finally:
        stop_head(worker, worker_temp)
        stop_head(head, temp)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, tiny_model_dir):
    """The user's checkout: tracked files plus a local model, a venv, runs and caches."""
    root = checkout_copy(tmp_path_factory.mktemp("job") / "s1ray")
    for d in (".venv/bin", "runs/old", ".cache/torch_extensions", ".tiny/model"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in (".venv/bin/python3", "runs/old/x.json", ".cache/torch_extensions/x.so"):
        (root / f).write_text("must not be uploaded")
    for f in Path(tiny_model_dir).iterdir():
        (root / ".tiny/model" / f.name).write_bytes(f.read_bytes())
    return root


def submit(address: str, checkout: Path, entrypoint: list[str], env_vars: dict[str, str] | None = None,
           timeout: float = 1200) -> tuple[str, str]:
    """`ray job submit --working-dir . [--runtime-env-json ...] -- <entrypoint>`: (status, logs)."""
    from ray.job_submission import JobSubmissionClient

    sid = f"s1ray-test-{time.monotonic_ns()}"
    cmd = [RAY, "job", "submit", "--address", address, "--submission-id", sid, "--working-dir", "."]
    if env_vars:
        cmd += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    env = {**cluster_env(), "RAY_ADDRESS": address}
    cli = subprocess.run(cmd + ["--", *entrypoint], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=timeout)
    client = JobSubmissionClient(address)
    try:
        return str(client.get_job_status(sid)), client.get_job_logs(sid)
    except Exception as exc:
        raise AssertionError(f"no job {sid}: {exc}; ray job submit said: {cli.stdout[-2000:]} {cli.stderr[-2000:]}")


def test_upload_leaves_out_venv_runs_models_and_caches(cluster, checkout):
    status, logs = submit(cluster, checkout, ["python", "-c", "import pathlib, json; print(json.dumps(sorted("
                                              "str(p) for p in pathlib.Path('.').rglob('*') if p.is_file())))"])
    assert status.endswith("SUCCEEDED"), logs
    uploaded = json.loads(logs.strip().splitlines()[-1])
    assert "jobs/evaluate.py" in uploaded and "configs/eval/tiny.yaml" in uploaded and "s1ray/storage.py" in uploaded
    for never in (".venv/", "runs/", ".tiny/", ".cache/", ".git/", "__pycache__"):
        assert not [f for f in uploaded if f.startswith(never) or f"/{never}" in f], never


@pytest.mark.skipif(not SHARED_DATA, reason="needs S1RAY_DATA_DIR (the MATH500/AIME24 files; the hub is offline here)")
def test_eval_of_a_model_only_on_the_submitting_machine(cluster, checkout, tmp_path):
    entry = ["python", "jobs/evaluate.py", "--config", "configs/eval/tiny.yaml"]
    store = tmp_path / "store"
    data = {"S1RAY_DATA_DIR": str(Path(SHARED_DATA).resolve())}
    # Without a storage location the outputs would vanish with Ray's copy of the working dir.
    status, logs = submit(cluster, checkout, entry, data)
    assert status.endswith("FAILED") and "Traceback" not in logs, logs
    assert "s1ray eval: output_dir: relative path 'runs/eval/tiny' would land in Ray's temporary copy" in logs
    # .tiny/model is gitignored: it never travels, and the driver says so before any engine starts.
    status, logs = submit(cluster, checkout, entry, {**data, "S1RAY_STORAGE": str(store)})
    assert status.endswith("FAILED") and "Traceback" not in logs and "HFValidationError" not in logs, logs
    assert "s1ray eval: engine.model: '.tiny/model' is a local path that did not travel with the job" in logs
    small = [*entry, f"engine.model={checkout / '.tiny/model'}", "limit=2", "datasets=[aime24]", "budgets=[16]",
             "methods=[budget_forcing]", "n_votes=[]", "max_answer_tokens=4", "progress=false"]
    # Two nodes: a local path is refused before anything is written, naming the field.
    status, logs = submit(cluster, checkout, small, {**data, "S1RAY_STORAGE": str(store)})
    assert status.endswith("FAILED") and "Traceback" not in logs, logs
    assert f"output_dir: '{store / 'runs/eval/tiny'}' is a local path and this Ray cluster has 2 nodes" in logs, logs


def test_pipeline_miniature(cluster, checkout, s3_server):
    """The paper-in-miniature pipeline job, reduced (a small pool, a short SFT, one budget, one
    method, one ablation student; no Serve), from the plain checkout (no S1RAY_DATA_DIR, hub
    offline) with its work dir on S3. Every stage writes there: the base model, curation's
    stages, the held-out set, SFT's checkpoints across both nodes and its HF export, the eval of
    that export (each node copies the model from S3 once), the paper stage's student (its copy
    of the curation, its SFT and its sweep) and report, the stage markers, the summary and the
    stage logs."""
    import pyarrow.fs as pafs

    from s1ray.eval.samples import read_samples
    from s1ray.storage import Location

    pool = "{name: miniature, kind: miniature, n: 400, seed: 0}"
    status, logs = submit(cluster, checkout, [
        "python", "jobs/pipeline.py", "--config", "configs/pipeline/paper.yaml", f"curation.sources=[{pool}]",
        "curation.quality.traces=[{kind: miniature_teacher, n: 400, seed: 0, self_check: 0.3}]",
        "curation.difficulty.solvers=[{kind: miniature_weak_solver, name: weak_solver, n: 400, seed: 0}]",
        "curation.selection.size=32", "heldout.n=4", "train.epochs=2", "train.checkpoint_every_steps=1",
        "eval.methods=[budget_forcing]", "eval.budgets=[16]", "eval.n_votes=[]",
        "paper.extrapolation.waits=[0]", "paper.extrapolation.continuations=[]",
        "paper.extrapolation.max_thinking_tokens=32", "paper.data_ablation.selections=[s1,random]",
        "paper.data_ablation.budget=16"], {"S1RAY_STORAGE": s3_server.uri("store")})
    assert status.endswith("SUCCEEDED"), logs
    work = s3_server.uri("store", "runs", "pipeline", "paper")
    assert f"[s1ray] pipeline paper: outputs in {work}" in logs
    (line,) = [ln for ln in logs.splitlines() if ln.startswith("[pipeline] curation: done")]
    assert "decontaminated against heldout; skipped math500" in line, line
    top = Location(work)
    summary = json.loads(top.read_text("summary.json"))
    stages = ("base_model", "curation", "heldout", "train", "eval", "paper")
    assert tuple(summary["stages"]) == stages
    assert summary["stages"]["curation"]["result"]["final_rows"] == 32
    assert summary["stages"]["train"]["result"]["metrics"]["step"] == 2
    assert top.exists("heldout.jsonl") and len(top.read_text("heldout.jsonl").splitlines()) == 4
    assert Location(f"{work}/curation/dataset").exists("s1k.parquet")
    assert Location(f"{work}/base_model").exists("config.json")
    train = Location(f"{work}/train/miniature-sft")
    dirs = [i.base_name for i in train.fs.get_file_info(pafs.FileSelector(train.root))
            if i.type == pafs.FileType.Directory]
    assert len([d for d in dirs if d.startswith("checkpoint")]) >= 1, dirs
    for model in (Location(f"{work}/model"), Location(f"{work}/paper/students/random/model")):
        assert model.exists("config.json") and any(n.endswith(".safetensors") for n in model.names()), model.names()
    assert {"metrics.md", "run.json"} <= set(Location(f"{work}/eval").names())
    assert len(read_samples(f"{work}/eval")) == 4  # 4 held-out problems, one budget, one method
    assert Location(f"{work}/paper/students/random").exists("curation.copied")
    assert len(read_samples(f"{work}/paper/ablation/random")) == 4
    assert {"report.md", "report.json", "methods.png", "parallel_vs_sequential.png", "extrapolation.png"} <= set(top.names())
    report = json.loads(top.read_text("report.json"))
    assert [(r["selection"], r["n_questions"]) for r in report["data_ablation"]] == [("s1", 4), ("random", 4)]
    assert {f"{s}.json" for s in stages} <= set(Location(f"{work}/stages").names())
    assert {f"{s}.log" for s in stages} <= set(Location(f"{work}/logs").names())
