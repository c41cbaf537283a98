"""The config system, and every shipped YAML under configs/ validated by its model."""

from pathlib import Path

import pytest

from s1ray.config import ConfigError, load_config
from s1ray.engine.types import EngineConfig
from s1ray.registry import config_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*/*.yaml"))


def test_configs_are_shipped():
    assert SHIPPED, "no YAML under configs/"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_yaml_validates(path):
    cfg = load_config(config_model(path.parent.name), path)
    assert cfg.model_dump()


def test_dotted_overrides_and_yaml_values(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("model: m\nmax_model_len: 128\n")
    cfg = load_config(EngineConfig, f, ["max_model_len=256", "extra_engine_args.swap_space=4", "enforce_eager=true"])
    assert cfg.max_model_len == 256 and cfg.enforce_eager is True
    assert cfg.extra_engine_args == {"swap_space": 4}


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["max_model_len=-1"], "max_model_len"),
        (["max_model_len=abc"], "max_model_len"),
        (["format=xml"], "format"),
        (["modle=foo"], "modle: unknown field"),
        (["noequals"], "expected KEY=VALUE"),
        (["model.sub=1"], "model"),
    ],
)
def test_errors_name_the_field(tmp_path, overrides, needle):
    f = tmp_path / "e.yaml"
    f.write_text("model: m\n")
    with pytest.raises(ConfigError) as e:
        load_config(EngineConfig, f, overrides)
    assert needle in str(e.value)


def test_missing_required_field_and_file(tmp_path):
    with pytest.raises(ConfigError, match="model: Field required"):
        load_config(EngineConfig, None, [])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(EngineConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(EngineConfig, bad)


def test_repeated_names_are_named():
    from pydantic import ValidationError

    from s1ray.config import check_unique_names
    from s1ray.curation.config import PatternConfig, QualityConfig

    check_unique_names(["a", "b"], "source")  # distinct: fine
    with pytest.raises(ValueError, match=r"source names are repeated: \['a', 'c'\]"):
        check_unique_names(["a", "b", "a", "c", "c"], "source")
    p = PatternConfig(name="x", pattern="y", fields=["question"])
    with pytest.raises(ValidationError, match=r"pattern names are repeated: \['x'\]"):
        QualityConfig(patterns=[p, p])


def test_defaults_compose_files_and_overrides_apply_last(tmp_path):
    from s1ray.serve.config import ServeConfig

    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "e.yaml").write_text("model: m\nmax_model_len: 128\nextra_engine_args: {a: 1}\n")
    (tmp_path / "base.yaml").write_text("max_n: 4\nserved_model_name: base\n")
    f = tmp_path / "serve" / "s.yaml"
    f.parent.mkdir()
    f.write_text("defaults:\n  - ../base.yaml\n  - engine: ../engine/e.yaml\n"
                 "engine: {max_model_len: 256, extra_engine_args: {b: 2}}\nserved_model_name: own\n")
    cfg = load_config(ServeConfig, f, ["engine.enforce_eager=true"])
    assert (cfg.engine.model, cfg.engine.max_model_len, cfg.engine.enforce_eager) == ("m", 256, True)
    assert cfg.engine.extra_engine_args == {"a": 1, "b": 2}  # mappings merge key by key
    assert (cfg.max_n, cfg.served_model_name) == (4, "own")  # the file's own keys win
    # a dotted key nests the included file deeper
    g = tmp_path / "p.yaml"
    g.write_text("defaults: [{serve.engine: engine/e.yaml}]\nserve: {max_n: 2}\n")
    from s1ray.config import compose_yaml

    assert compose_yaml(g) == {"serve": {"engine": {"model": "m", "max_model_len": 128, "extra_engine_args": {"a": 1}},
                                         "max_n": 2}}


def test_defaults_errors(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("defaults: [b.yaml]\nmodel: m\n")
    b.write_text("defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match="include themselves"):
        load_config(EngineConfig, a)
    a.write_text("defaults: [missing.yaml]\nmodel: m\n")
    with pytest.raises(ConfigError, match="missing.yaml.*does not exist"):
        load_config(EngineConfig, a)
    a.write_text("defaults: {engine: b.yaml}\nmodel: m\n")
    with pytest.raises(ConfigError, match="defaults must be a list"):
        load_config(EngineConfig, a)


def test_shipped_configs_write_each_engine_block_once():
    """serve/eval configs start from configs/engine; pipelines leave wired models out."""
    from s1ray.config import read_yaml

    for p in [*(ROOT / "configs" / "serve").glob("*.yaml"), *(ROOT / "configs" / "eval").glob("*.yaml")]:
        raw = read_yaml(p)
        if "engine" in raw:
            assert "model" not in raw["engine"] and raw.get("defaults"), p
    for p in (ROOT / "configs" / "pipeline").glob("*.yaml"):
        assert "model: unused" not in p.read_text(), p


def test_pipeline_sections_of_unlisted_stages_need_no_model():
    """The miniature cut to its data stages (as `ray job submit` tests run it) still loads; an eval
    listed without train must name its model."""
    from s1ray.pipeline.config import PipelineConfig

    mini = ROOT / "configs" / "pipeline" / "miniature.yaml"
    cfg = load_config(PipelineConfig, mini, ["stages=[base_model,curation,heldout]"])
    assert cfg.stages == ["base_model", "curation", "heldout"]
    with pytest.raises(ConfigError, match=r"eval\.engine\.model"):
        load_config(PipelineConfig, mini, ["stages=[curation,heldout,eval]"])
