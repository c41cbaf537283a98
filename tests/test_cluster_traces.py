"""Trace generation with a local vLLM teacher on the production topology in miniature: the
2-node cluster of tests/cluster_fixtures.py, shards on the moto S3, and the node that runs the
vLLM engine removed once the engine is up with the rows before it, then replaced. Every (question, sample) ends in
the shards exactly once -- generated, or recorded with its error -- and a rerun generates
nothing new unless rows failed, which it then regenerates.

Placing the engine: it asks for 0.75 CPU and a placeholder actor holds half of
the head's CPU, so the engine can only land on the second node (the head cannot be removed: this
process is its driver), while the pre/postprocess tasks (0.25 CPU) still fit on the head. The
placeholder is the test's own, not s1ray's.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from cluster_fixtures import s3_server, two_nodes, wait_for  # noqa: F401  (fixtures)

from evaldata import eval_file

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
QUESTIONS, SAMPLES = 40, 2
ENGINE_CPUS = 0.75


def _config(qfile: Path, out: str, model: str):
    from s1ray.config import load_config
    from s1ray.traces.config import TracesConfig

    return load_config(TracesConfig, ROOT / "configs/traces/tiny_local.yaml", [
        f"input.path={qfile}", "input.limit=null", "input.fields={id: id, question: problem}", "input.source=math500",
        f"output_dir={out}", f"teacher.engine.model={model}", "teacher.name=tiny", "teacher.batch_size=2", "teacher.max_concurrent_batches=1",
        f"teacher.cpu_engine_num_cpus={ENGINE_CPUS}", "teacher.map_num_cpus=0.25", "teacher.check_resources=false",
        "sampling.max_tokens=48", f"samples_per_question={SAMPLES}", "shard_size=8", "retry_errors=true"])


def _shard_rows(out: str) -> tuple[Counter, set]:
    """(id, sample) of every row in every completed shard, repeats counted; and those with an error."""
    from s1ray.storage import Location
    from s1ray.traces.output import completed_shards, read_shard

    loc = Location(out)
    rows = [r for name in completed_shards(loc) for r in read_shard(loc, name)]
    return Counter((r["id"], r["sample_index"]) for r in rows), {(r["id"], r["sample_index"]) for r in rows if r["error"]}


def _engine_node() -> str | None:
    """The node of the live vLLM engine actor (Ray Data's actor pool worker), once it is up."""
    from ray._private.state import actors  # the state API needs the dashboard, off here

    for a in actors().values():
        if "VLLMEngineStageUDF" in a.get("ActorClassName", "") and a.get("State") == "ALIVE":
            return a["Address"]["NodeID"]
    return None


def test_traces_survive_losing_the_engine_node(two_nodes, s3_server, tmp_path, tiny_model_dir):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from s1ray.traces.job import TracesJobError, run_traces
    from s1ray.traces.output import read_traces

    qfile = tmp_path / "math500.jsonl"
    qfile.write_text("".join(eval_file("math500").read_text().splitlines(keepends=True)[:QUESTIONS]))
    out = s3_server.uri("traces", "lossy")
    cfg = _config(qfile, out, tiny_model_dir)
    head_id = two_nodes.head_node.node_id

    @ray.remote(num_cpus=0.5)
    class Placeholder:
        def ready(self):
            return True

    holder = Placeholder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)).remote()
    ray.get(holder.ready.remote())
    seen: list = []
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = run_traces(cfg, on_row=seen.append)
        except BaseException as e:  # handed to the test thread below
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: _engine_node() is not None, "the engine actor alive", alive=thread.is_alive)
    engine_node = _engine_node()
    assert engine_node != head_id
    # The engine is up and has all the work before it: lose its node now, so that the rows are
    # in flight on it (waiting for rows back first races the engine, which can finish them all).
    (lost,) = [n for n in two_nodes.list_all_nodes() if n.node_id == engine_node]
    at_loss = len(seen)
    two_nodes.remove_node(lost)
    replacement = two_nodes.add_node(**NODE, resources={"node2": 1})
    assert at_loss < QUESTIONS * SAMPLES, "every row was back before the node was removed"
    # the engine comes back on the replacement node, and the rows come from it
    wait_for(lambda: _engine_node() == replacement.node_id, "an engine on the replacement node",
             alive=thread.is_alive)
    thread.join(1200)
    assert not thread.is_alive(), "the trace job did not end after the engine's node was lost"
    first = outcome.get("result")
    if first is None:  # the job may fail on the loss: it must say so, keep what it wrote, and resume
        assert isinstance(outcome["error"], TracesJobError) and "rerun to resume" in str(outcome["error"]), outcome
    keys, failed = _shard_rows(out)
    assert keys and max(keys.values()) == 1, "a row written twice, or none at all"
    rerun = run_traces(cfg)
    after, _ = _shard_rows(out)
    want = {(json.loads(line)["id"], s) for line in qfile.read_text().splitlines() for s in range(SAMPLES)}
    final = read_traces(out)
    assert {(r["id"], r["sample_index"]) for r in final} == want and len(final) == len(want)
    assert all(r["error"] is None for r in final), [r["error"] for r in final if r["error"]][:3]
    # twice in the shards only where the first copy was an error that the rerun regenerated
    assert {k for k, n in after.items() if n > 1} <= failed and max(after.values()) <= 2
    assert rerun.generated == len(want) - len(keys) + len(failed)
    ended = "completed" if first else f"failed: {str(outcome['error'])[:300]}"
    print(f"\n[traces under node loss] rows back at the loss: {at_loss}; first run {ended}; rows written "
          f"{sum(keys.values())} ({len(failed)} errors); rerun generated {rerun.generated}; rows {len(final)}/{len(want)}")
