"""The `s1ray` console script: bad input exits 2 naming the parameter; generate --json runs vLLM."""

import json
import subprocess
import sys

import pytest


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
