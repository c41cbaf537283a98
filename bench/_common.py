"""Helpers shared by the benchmarks: the model to run, timing, tables and the JSON report.

Both benchmarks print *ratios* of two configurations measured side by side in one run: on a
shared CPU the absolute numbers move with the neighbours' load, a ratio much less.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Before vLLM / Ray / tokenizers are imported anywhere.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

RESULTS = Path(__file__).resolve().parent / "results"  # bench/report.py renders these into docs/benchmarks.md

# Qwen2.5-0.5B's shapes (config.json of Qwen/Qwen2.5-0.5B), random-initialised.
SHAPES = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
}


def base_parser(description: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="HF model name or path (default: a tiny random model made locally)")
    src.add_argument("--shape", choices=sorted(SHAPES), help="random-init model with these shapes (GPU runs)")
    p.add_argument("--quick", action="store_true", help="small workload, for iteration (~1/4 of the default)")
    p.add_argument("--out", default=str(RESULTS / f"{name}.json"),
                   help="where to write the JSON results (default: %(default)s)")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on without CUDA (CPU engines start much faster), off on a GPU")
    return p


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def device_name() -> str:
    if has_cuda():
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def make_shaped_model(out_dir: Path, shape: str, seed: int = 0) -> Path:
    """A random-init Qwen2 model with ``shape``'s dimensions and the tiny model's tokenizer.

    The embedding/LM head keeps the real vocabulary size (151936), so the LM head costs what it
    costs in the real model; ids beyond the tiny tokenizer's vocabulary decode to nothing.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from s1ray.tiny_model import build_tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed, 2048)
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = max(dims["vocab_size"], len(tok))
    eos = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    cfg = Qwen2Config(**dims, eos_token_id=eos[0], pad_token_id=eos[1], bos_token_id=None)
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.bfloat16)  # init straight in bf16: half the memory and time
    try:
        model = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[1])
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def resolve_model(args) -> tuple[str, str]:
    """(path, description) of the model the benchmark runs."""
    if args.model:
        return args.model, args.model
    tmp = Path(tempfile.mkdtemp(prefix="s1ray-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the shaped model is ~1 GB
    if args.shape:
        t = time.perf_counter()
        path = make_shaped_model(tmp / args.shape, args.shape)
        print(f"made random-init {args.shape}-shaped model in {time.perf_counter() - t:.0f} s: {path}", flush=True)
        return str(path), f"random-init {args.shape} shapes"
    from s1ray.tiny_model import make_tiny_model

    return str(make_tiny_model(tmp / "tiny", seed=0)), "tiny random Qwen2 (s1ray.tiny_model, seed 0)"


def engine_config(args, model: str, **over):
    from s1ray.engine.types import EngineConfig

    eager = args.enforce_eager if args.enforce_eager is not None else not has_cuda()
    kw = dict(model=model, max_model_len=args.max_model_len, dtype=args.dtype, enforce_eager=eager,
              cpu_kv_cache_gib=1)
    kw.update(over)
    return EngineConfig(**kw)


def shutdown(engine) -> None:
    """Shut a BudgetEngine down. Something keeps the vLLM ``AsyncLLM`` alive until interpreter
    exit, whose ``__del__`` then calls ``shutdown()`` again on a half-torn-down interpreter
    (a noisy, harmless TypeError): make that second call a no-op."""
    llm = engine.engine
    engine.shutdown()
    if llm is not None:
        llm.shutdown = lambda *a, **k: None


def trigger_id(tokenizer, fmt: str = "s1") -> int:
    """The first token of the format's first end-of-thinking trigger (s1: ``<|im_start|>``), as
    the engine tokenizes it: a logit bias on it makes a model *try* to stop thinking, so the
    "Wait" path really runs."""
    from s1ray.engine.planner import tokenize_format
    from s1ray.formats import get_format

    return tokenize_format(tokenizer, get_format(fmt)).end_triggers[0][0]


QUESTIONS = [
    "What is 12 + 30?", "Compute 7 * 8.", "How many primes are below 20?", "Solve x + 5 = 12.",
    "What is the area of a 3 by 4 rectangle?", "Find the remainder of 100 divided by 7.",
    "What is 2 to the power 10?", "Is 91 prime?", "What is the sum of the first 10 integers?",
    "Simplify 12/18.", "What is the square root of 144?", "How many sides does a hexagon have?",
    "What is 15% of 80?", "Compute 123 - 45.", "What is 9 squared?", "Find x if 3x = 27.",
]


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


def wait_for_engine_exit(timeout_s: float = 120.0) -> float:
    """Wait until no vLLM engine process (``VLLM::EngineCore``/``VLLM::Worker``) is left.

    A Ray actor's engine processes outlive ``ray.shutdown()`` by seconds (they notice their
    parent is gone and exit), and a spinning worker takes a core from whatever is measured
    next. Returns the seconds waited.
    """
    import psutil

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        left = []
        for p in psutil.process_iter(["name"]):
            if (p.info["name"] or "").startswith("VLLM::"):
                left.append(p)
        if not left:
            break
        psutil.wait_procs(left, timeout=1.0)
    return time.perf_counter() - t0


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """rows: dicts; cols: (key, header, format)."""
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        cells.append([("" if r.get(k) is None else format(r[k], f)) for k, _, f in cols])
    w = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].ljust(w[i]) if i == 0 else c[i].rjust(w[i]) for i in range(len(cols))) for c in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def git_commit() -> str:
    """The checkout's commit (+ "-dirty" with uncommitted changes), or "unknown" outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> str:
    """What ran the benchmark: the device, the CPU cores and memory, and the load when it started."""
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        mem = ""
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{device_name()}; {os.cpu_count()} CPU cores{mem}{load}"


def stamp() -> dict:
    """The fields bench/report.py prints above every result: when, which commit, what machine."""
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(), "machine": machine(),
            "device": device_name()}


def write_json(path: str, payload: dict) -> None:
    """Write a result for bench/report.py: ``bench`` (its name), ``ratios`` (the headline figures,
    {name: number}), optionally ``table`` (a list of flat dicts), anything else; stamped here."""
    payload = {**stamp(), **payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nresults written to {path}")
