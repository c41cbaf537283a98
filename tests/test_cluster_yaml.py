"""cluster.yaml validated by Ray's own autoscaler config code (schema + defaults; no cloud call)."""

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid_for_ray_up():
    cfg = prepare_config(load())
    validate_config(cfg)
    workers = cfg["available_node_types"]["gpu_8x_h100"]
    assert workers["resources"]["GPU"] == 8 and workers["min_workers"] == 2
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"]["GPU"] == 0
    assert any("[gpu]" in c for c in cfg["setup_commands"])


def test_validation_really_checks():
    bad = load()
    bad["available_node_types"]["gpu_8x_h100"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_configs_and_cluster_yaml_agree_on_storage():
    """One storage setting: the cluster exports S1RAY_STORAGE (a mount every node has, declared
    shared) and the s1_32b configs' outputs are relative, so they land under it."""
    from s1ray.config import load_config
    from s1ray.pipeline.config import PipelineConfig
    from s1ray.train.config import TrainConfig

    setup = "\n".join(load()["setup_commands"])
    assert "S1RAY_STORAGE=${S1RAY_STORAGE:-/mnt/shared/s1ray}" in setup and "S1RAY_STORAGE_SHARED=1" in setup
    assert "mount -t nfs4" in setup and "/mnt/shared" in setup
    train = load_config(TrainConfig, ROOT / "configs/train/s1_32b.yaml")
    pipeline = load_config(PipelineConfig, ROOT / "configs/pipeline/s1_32b.yaml")
    for path in (train.storage_path, pipeline.work_dir):
        assert not path.startswith(("/", "~")) and "://" not in path, path
