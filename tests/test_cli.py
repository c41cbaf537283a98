"""The `s1ray` console script: bad input exits 2 naming the parameter; generate --json runs vLLM;
every job is a subcommand taking --config and dotted overrides."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "s1ray.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--min-thinking-tokens", "9", "--max-thinking-tokens", "3"], "min_thinking_tokens"),
        (["--max-thinking-tokens", "-1"], "max_thinking_tokens"),
        (["--format", "xml"], "format"),
        (["--method", "beam"], "method"),
        (["--n", "0"], "n:"),
        (["--max-thinking-tokens", "5000"], "max_thinking_tokens"),
    ],
)
def test_bad_input_is_one_line_naming_the_parameter(tiny_model_dir, args, needle):
    r = run_cli("generate", "--model", tiny_model_dir, "--prompt", "hi", *args)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_prompt_longer_than_context(tiny_model_dir):
    r = run_cli("generate", "--model", tiny_model_dir, "--prompt", "word " * 3000, "--max-model-len", "512")
    assert r.returncode == 2 and "prompt" in r.stderr


@pytest.mark.vllm
def test_generate_json(tiny_model_dir):
    r = run_cli(
        "generate", "--model", tiny_model_dir, "--prompt", "What is 2+2?", "--min-thinking-tokens", "10",
        "--max-thinking-tokens", "20", "--max-answer-tokens", "5", "--max-model-len", "512", "--enforce-eager",
        "--json",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("thinking_tokens", "answer_tokens", "num_waits", "forced_end", "thinking", "answer"):
        assert key in out
    assert 10 <= out["thinking_tokens"] <= 20


# -- the job subcommands: s1ray <job> --config ... [dotted overrides] ----------------------------
JOB_CONFIGS = {
    "pipeline": "configs/pipeline/miniature.yaml",
    "curate": "configs/curation/miniature.yaml",
    "traces": "configs/traces/tiny_local.yaml",
    "train": "configs/train/tiny_cpu.yaml",
    "eval": "configs/eval/tiny.yaml",
    "serve": "configs/serve/tiny.yaml",
}


def test_every_job_is_a_subcommand_with_overrides_around_its_flags():
    from s1ray import cli

    assert set(JOB_CONFIGS) <= set(cli.JOBS)
    args = cli.parse_args(["train", "max_steps=4", "--config", "c.yaml", "--dry-run", "dataset.limit=8"])
    assert (args.command, args.config, args.dry_run) == ("train", "c.yaml", True)
    assert args.overrides == ["max_steps=4", "dataset.limit=8"]
    with pytest.raises(SystemExit):
        cli.parse_args(["eval", "--config", "c.yaml", "--no-such-flag"])


@pytest.mark.parametrize("job", sorted(JOB_CONFIGS))
def test_bad_config_exits_2_naming_the_field(job, capsys, monkeypatch):
    from s1ray import cli

    monkeypatch.chdir(ROOT)
    assert cli.main([job, "--config", JOB_CONFIGS[job], "no_such_field.deeper=1"]) == 2
    err = capsys.readouterr().err
    assert f"s1ray {job}:" in err and "no_such_field: unknown field" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_config_file_and_bad_value_exit_2(capsys, monkeypatch):
    from s1ray import cli

    monkeypatch.chdir(ROOT)
    assert cli.main(["eval", "--config", "configs/eval/nope.yaml"]) == 2
    assert "configs/eval/nope.yaml' does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--config", JOB_CONFIGS["train"], "zero_stage=7"]) == 2
    assert "zero_stage" in capsys.readouterr().err
    assert cli.main(["serve", "--config", JOB_CONFIGS["serve"], "engine.model=./no/such/model"]) == 2
    assert "engine.model: no model at './no/such/model'" in capsys.readouterr().err


def test_the_job_scripts_are_the_cli(capsys, monkeypatch):
    """jobs/*.py (the `ray job submit` entrypoints) reach the same subcommand."""
    import importlib.util

    monkeypatch.chdir(ROOT)
    for script, job in [("pipeline", "pipeline"), ("curate", "curate"), ("generate_traces", "traces"),
                        ("train_sft", "train"), ("evaluate", "eval")]:
        spec = importlib.util.spec_from_file_location(f"job_{script}", ROOT / "jobs" / f"{script}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert mod.main(["--config", JOB_CONFIGS[job], "bogus=1"]) == 2
        assert f"s1ray {job}: " in capsys.readouterr().err
