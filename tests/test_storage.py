"""Where jobs write (S1RAY_STORAGE) and which model paths travel, decided on the driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s1ray.config import ConfigError
from s1ray.storage import JOB_CONFIG_ENV, STORAGE_ENV, check_model, resolve_output, uploaded_working_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plain(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    return monkeypatch


def as_ray_job(monkeypatch):
    """The environment Ray's job supervisor gives a `ray job submit --working-dir .` entrypoint."""
    runtime_env = {"working_dir": "gcs://_ray_pkg_0123456789abcdef.zip"}
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": runtime_env, "metadata": {}}))


def test_relative_outputs_resolve_under_the_storage_location(plain, tmp_path):
    plain.chdir(tmp_path)
    assert resolve_output("runs/eval/x", "output_dir") == str(tmp_path / "runs/eval/x")
    assert resolve_output("/abs/out", "output_dir") == "/abs/out"
    plain.setenv(STORAGE_ENV, str(tmp_path / "store"))
    assert resolve_output("runs/eval/x", "output_dir") == str(tmp_path / "store/runs/eval/x")
    assert resolve_output("/abs/out", "output_dir") == "/abs/out"


def test_s3_storage_takes_every_jobs_relative_outputs(plain):
    plain.setenv(STORAGE_ENV, "s3://bucket/s1ray/")
    assert resolve_output("runs/train", "storage_path") == "s3://bucket/s1ray/runs/train"
    assert resolve_output("runs/eval/x", "output_dir") == "s3://bucket/s1ray/runs/eval/x"
    assert resolve_output("s3://b/x", "output_dir") == "s3://b/x"
    assert resolve_output("/abs/out", "output_dir") == "/abs/out"


def test_a_ray_job_without_storage_refuses_relative_outputs(plain, tmp_path):
    assert not uploaded_working_dir()
    as_ray_job(plain)
    assert uploaded_working_dir()
    with pytest.raises(ConfigError, match=r"^work_dir: relative path 'runs/pipeline/m' would land in Ray's "
                                          r"temporary copy .*set S1RAY_STORAGE"):
        resolve_output("runs/pipeline/m", "work_dir")
    assert resolve_output(str(tmp_path / "out"), "work_dir") == str(tmp_path / "out")
    plain.setenv(STORAGE_ENV, str(tmp_path))
    assert resolve_output("runs/pipeline/m", "work_dir") == str(tmp_path / "runs/pipeline/m")


def test_model_paths(plain, tmp_path):
    plain.chdir(tmp_path)
    assert check_model("Qwen/Qwen2.5-7B-Instruct", "engine.model") == "Qwen/Qwen2.5-7B-Instruct"
    (tmp_path / "m").mkdir()
    assert check_model("./m", "engine.model") == str(tmp_path / "m")
    with pytest.raises(ConfigError, match=r"^engine.model: model path .*\.tiny/model.* does not exist"):
        check_model(".tiny/model", "engine.model")
    as_ray_job(plain)
    with pytest.raises(ConfigError) as err:
        check_model(".tiny/model", "engine.model")
    msg = str(err.value)
    assert msg.startswith("engine.model: '.tiny/model' is a local path that did not travel with the job")
    assert "absolute path on storage every node sees" in msg and "HF hub id" in msg


def test_evaluate_job_rejects_a_model_that_did_not_travel_before_any_actor(plain, capsys):
    """Exit 2 and one line naming the field; nothing started (the check precedes Ray)."""
    import ray

    from jobs.evaluate import main

    as_ray_job(plain)
    code = main(["--config", str(ROOT / "configs/eval/tiny.yaml"), "output_dir=/tmp/unused-s1ray-eval"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not ray.is_initialized()
    assert err.startswith("s1ray eval: engine.model: '.tiny/model' is a local path that did not travel") and "\n" not in err


def test_a_location_is_a_directory_on_a_pyarrow_filesystem(tmp_path):
    from s1ray.storage import Location

    loc = Location(tmp_path / "d")
    loc.makedirs()
    assert loc.names() == [] and not loc.exists("a.txt")
    loc.write_text("a.txt", "one")
    loc.write_bytes("b.bin", b"\x00")
    assert loc.names() == ["a.txt", "b.bin"] and loc.read_text("a.txt") == "one"
    assert [p.name for p in (tmp_path / "d").iterdir() if p.name.startswith(".")] == []  # no temp file left
    loc.delete("b.bin")
    assert loc.names() == ["a.txt"] and loc.path("a.txt") == str(tmp_path / "d" / "a.txt")
    assert Location(tmp_path / "missing").names() == []


def test_copy_tree_copies_a_directory_between_locations(tmp_path):
    from s1ray.dataio import copy_tree

    (tmp_path / "src" / "a" / "b").mkdir(parents=True)
    (tmp_path / "src" / "top.txt").write_text("1")
    (tmp_path / "src" / "a" / "b" / "deep.txt").write_text("2")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "top.txt").write_text("old")
    copy_tree(tmp_path / "src", tmp_path / "dst")
    got = sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*") if p.is_file())
    assert got == ["a/b/deep.txt", "top.txt"] and (tmp_path / "dst" / "top.txt").read_text() == "1"
    with pytest.raises(FileNotFoundError, match="no such directory"):
        copy_tree(tmp_path / "missing", tmp_path / "dst2")


def test_shared_storage_check_needs_several_nodes(plain, monkeypatch):
    from s1ray import storage

    storage.check_shared("/local/out", "output_dir")  # no Ray connection: nothing to compare with
    monkeypatch.setattr(storage, "alive_nodes", lambda: 1)
    storage.check_shared("/local/out", "output_dir")
    monkeypatch.setattr(storage, "alive_nodes", lambda: 3)
    with pytest.raises(ConfigError, match=r"^storage_path: '/local/out' is a local path and this Ray cluster has 3 "
                                          r"nodes.*s3://.*S1RAY_STORAGE_SHARED=1"):
        storage.check_shared("/local/out", "storage_path")
    storage.check_shared("s3://bucket/out", "storage_path")
    storage.check_shared(None, "export_dir")
    monkeypatch.setenv(storage.SHARED_ENV, "true")
    storage.check_shared("/local/out", "storage_path")
