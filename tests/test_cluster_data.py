"""Ray Data stages on the production topology in miniature: the miniature's curation on a 2-node
cluster (tests/cluster_fixtures.py), with the second node removed while a stage runs and a
replacement added. Every question ends where a clean run puts it, exactly once: the same kept
rows per stage, the same recorded rejects, the same final dataset.

The run that loses a node writes to the moto S3 (stage outputs uploaded marker last); the clean
run writes to a path both "nodes" see (they share this machine's disk), declared with
S1RAY_STORAGE_SHARED=1 as a user would declare an NFS/EFS mount. So the test also shows that
curation on S3 and on a shared path give the same rows."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cluster_fixtures import s3_server, two_nodes, wait_for  # noqa: F401  (fixtures)

from s1ray.storage import SHARED_ENV, Location

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}


def _config(out: Path | str):
    from s1ray.config import load_config
    from s1ray.curation.config import CurationConfig

    return load_config(CurationConfig, ROOT / "configs/curation/miniature.yaml", [f"output_dir={out}"])


def _rows(result) -> dict[str, tuple[int, int]]:
    return {name: (s["rows_in"], s["rows_out"]) for name, s in result.stages.items()}


def _ids(path: Path | str, column: str = "id") -> list[str]:
    import pyarrow.dataset as pads

    return sorted(pads.dataset(str(path), format="parquet").to_table(columns=[column]).column(column).to_pylist())


def _is_dir(path: Path | str) -> bool:
    from s1ray.storage import Location

    return bool(Location(path).names())


def test_curation_survives_a_lost_node(two_nodes, s3_server, tmp_path, monkeypatch):
    import ray

    from s1ray.curation.pipeline import run_curation
    from s1ray.curation.store import StageStore

    monkeypatch.setenv(SHARED_ENV, "1")
    clean = run_curation(_config(tmp_path / "clean"))
    monkeypatch.delenv(SHARED_ENV)  # S3 needs no such declaration
    lossy_dir = s3_server.uri("curation", "lossy")
    outcome: dict = {}

    def lossy():
        try:
            outcome["result"] = run_curation(_config(lossy_dir))
        except BaseException as e:  # handed to the test thread below
            outcome["error"] = e

    thread = threading.Thread(target=lossy, daemon=True)
    thread.start()
    store = StageStore(lossy_dir)
    # Dedupe is done on S3 (its marker is there) and quality is not: quality is next or running.
    wait_for(lambda: store.marker("dedupe") is not None, "the dedupe stage on S3", alive=thread.is_alive)
    (lost,) = [n for n in two_nodes.list_all_nodes() if n is not two_nodes.head_node]
    running_at_loss = store.marker("quality") is None
    two_nodes.remove_node(lost)
    two_nodes.add_node(**NODE, resources={"node2": 1})
    thread.join(900)
    assert not thread.is_alive(), "curation did not finish after the node was lost"
    if "error" in outcome:
        raise outcome["error"]
    lossy = outcome["result"]
    assert running_at_loss, "the quality stage finished before the node was removed"
    assert sum(n["Alive"] for n in ray.nodes()) == 2
    assert _rows(lossy) == _rows(clean)  # per stage, rows in and rows kept
    clean_store = StageStore(tmp_path / "clean")
    for stage in clean.stages:
        if stage == "export":
            continue
        for part in ("kept", "rejects"):
            a, b = getattr(clean_store, part)(stage), getattr(store, part)(stage)
            assert _is_dir(a) == _is_dir(b), (stage, part)
            if _is_dir(a):
                assert _ids(b) == _ids(a), (stage, part)  # sorted with repeats: none lost, none twice
    assert lossy.dataset_dir == f"{lossy_dir}/dataset"
    assert _ids(f"{lossy.dataset_dir}/s1k.parquet") == _ids(Path(clean.dataset_dir) / "s1k.parquet")
    report = Location(lossy.report_dir)
    assert {"report.json", "report.md", "domains.png", "trace_lengths.png"} <= set(report.names())
    # A rerun on S3 finds every stage done there and redoes none.
    again = run_curation(_config(lossy_dir))
    assert again.executed == [] and _rows(again) == _rows(clean)
