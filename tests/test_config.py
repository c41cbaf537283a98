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
