"""Ray Data stages on the production topology in miniature: the miniature's curation on a 2-node
cluster (tests/cluster_fixtures.py), with the second node removed while a stage runs and a
replacement added. Every question ends where a clean run puts it, exactly once: the same kept
rows per stage, the same recorded rejects, the same final dataset.

The output directory is a path both "nodes" see (they share this machine's disk), declared with
S1RAY_STORAGE_SHARED=1 as a user would declare an NFS/EFS mount; the S3 path is
tests/test_cluster.py's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cluster_fixtures import s3_server, two_nodes, wait_for  # noqa: F401  (fixtures)

from s1ray.storage import SHARED_ENV

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}


def _config(out: Path):
    from s1ray.config import load_config
    from s1ray.curation.config import CurationConfig

    return load_config(CurationConfig, ROOT / "configs/curation/miniature.yaml", [f"output_dir={out}"])


def _rows(result) -> dict[str, tuple[int, int]]:
    return {name: (s["rows_in"], s["rows_out"]) for name, s in result.stages.items()}


def _ids(path: Path, column: str = "id") -> list[str]:
    import pyarrow.dataset as pads

    return sorted(pads.dataset(str(path), format="parquet").to_table(columns=[column]).column(column).to_pylist())


def test_curation_survives_a_lost_node(two_nodes, tmp_path, monkeypatch):
    import ray

    from s1ray.curation.pipeline import run_curation

    monkeypatch.setenv(SHARED_ENV, "1")
    clean = run_curation(_config(tmp_path / "clean"))
    outcome: dict = {}

    def lossy():
        try:
            outcome["result"] = run_curation(_config(tmp_path / "lossy"))
        except BaseException as e:  # handed to the test thread below
            outcome["error"] = e

    thread = threading.Thread(target=lossy, daemon=True)
    thread.start()
    stages = tmp_path / "lossy" / "stages"
    # The quality stage is running: its output is still a temporary directory, not yet swapped in.
    wait_for(lambda: stages.is_dir() and any(p.name.startswith(".quality.tmp-") for p in stages.iterdir()),
             "the quality stage running", alive=thread.is_alive)
    (lost,) = [n for n in two_nodes.list_all_nodes() if n is not two_nodes.head_node]
    running_at_loss = not (stages / "quality").exists()  # not yet swapped in: the stage is mid-run
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
    for stage in clean.stages:
        if stage == "export":
            continue
        for part in ("kept", "rejects"):
            a, b = tmp_path / "clean" / "stages" / stage / part, tmp_path / "lossy" / "stages" / stage / part
            assert a.is_dir() == b.is_dir(), (stage, part)
            if a.is_dir():
                assert _ids(b) == _ids(a), (stage, part)  # sorted with repeats: none lost, none twice
    assert _ids(Path(lossy.dataset_dir) / "s1k.parquet") == _ids(Path(clean.dataset_dir) / "s1k.parquet")
