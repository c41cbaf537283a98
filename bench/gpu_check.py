"""The prepared GPU check: what the CPU benches cannot show, in one call on one H100/H200.

    bash bench/gpu_check.sh                  # on the GPU machine: <= 10 min, one JSON under $OUT
    python bench/gpu_check.py --dry-run      # the same code path on the CPU with tiny shapes (tests)

Parts, each recorded in the one JSON (``gpu_check.json``) as measured, skipped (with the reason),
failed (with the error's tail) or timed out:

* ``loss`` (torch only, always runs): SFT's loss at 8k/16k/32k tokens with a Qwen2.5-32B-like LM
  head (hidden 5120, vocab 152064, bf16): peak CUDA memory and forward+backward time of
  ``fused_chunked`` (:func:`s1ray.train.loss.linear_ce_sum`: one chunk's logits at a time) vs
  ``logits`` (the full logits, then :func:`s1ray.train.modeling.token_ce_sum`), and their loss
  values (they must agree). Liger's kernel is used by the fused path only where liger-kernel is
  installed; the JSON says which ran.
* ``engine`` (needs vllm), ``traces`` (vllm + ray), ``train`` (ray + deepspeed + transformers):
  the benches' own GPU shapes (bench/README.md), each in a subprocess with its share of the time
  budget; its JSON is folded into this one.

A device machine with torch alone runs ``loss`` and records the other three as skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Qwen2.5-32B-Instruct's LM head: hidden 5120, vocabulary 152064 (bf16).
GPU_SHAPE = {"hidden": 5120, "vocab": 152064, "tokens": [8192, 16384, 32768], "chunk": 1024, "reps": 3}
DRY_SHAPE = {"hidden": 64, "vocab": 1000, "tokens": [256, 512], "chunk": 128, "reps": 1}

# part -> (modules it needs, command after `python`, seconds it may take at most)
BENCHES = {
    "engine": (["vllm"], ["bench/bench_engine.py", "--shape", "qwen2.5-0.5b", "--quick"], 150),
    "traces": (["vllm", "ray"], ["bench/bench_traces.py", "--shape", "qwen2.5-0.5b", "--quick"], 150),
    "train": (["ray", "deepspeed", "transformers"],
              ["bench/bench_train.py", "--gpu", "--workers", "1", "--shape", "qwen2.5-1.5b", "--block", "16384",
               "--examples", "16", "--steps", "4"], 200),
}


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "modules": {m: installed(m) for m in ("vllm", "ray", "deepspeed", "transformers", "liger_kernel")}}
    if env["cuda"]:
        env["device"] = torch.cuda.get_device_name(0)
        env["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return env


def _loss_once(impl: str, hidden, head, labels, chunk: int):
    from s1ray.train.loss import linear_ce_sum
    from s1ray.train.modeling import token_ce_sum

    h = hidden.detach().requires_grad_(True)
    if impl == "fused_chunked":
        loss = linear_ce_sum(h, head, labels, chunk)
    else:
        loss = token_ce_sum(head(h), labels, chunk)
    loss.backward()
    return float(loss.detach())


def measure_loss(impl: str, tokens: int, shape: dict, device: str) -> dict:
    """Peak memory above the inputs and best forward+backward time of one loss implementation."""
    import torch

    torch.manual_seed(0)
    cuda = device == "cuda"
    head = torch.nn.Linear(shape["hidden"], shape["vocab"], bias=False, device=device, dtype=torch.bfloat16)
    hidden = torch.randn(1, tokens, shape["hidden"], device=device, dtype=torch.bfloat16)
    labels = torch.randint(0, shape["vocab"], (1, tokens), device=device)
    labels[:, : tokens // 8] = -100  # a prompt: unlabelled positions, as in SFT
    row: dict = {"impl": impl, "tokens": tokens}
    times, peak = [], None
    try:
        for _ in range(shape["reps"] + 1):  # the first is warm-up
            head.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            row["loss"] = _loss_once(impl, hidden, head, labels, shape["chunk"])
            if cuda:
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - base
            times.append(time.perf_counter() - t0)
    except torch.cuda.OutOfMemoryError as e:
        row["status"] = "oom"
        row["error"] = str(e).splitlines()[0][:300]
        return row
    finally:
        del head, hidden, labels
        if cuda:
            torch.cuda.empty_cache()
    row["status"] = "measured"
    row["time_s"] = min(times[1:])
    row["peak_gib"] = None if peak is None else round(peak / 2**30, 3)
    return row


def loss_part(shape: dict, device: str) -> dict:
    rows = [measure_loss(impl, t, shape, device) for t in shape["tokens"] for impl in ("logits", "fused_chunked")]
    ratios = []
    for t in shape["tokens"]:
        a, b = (next(r for r in rows if r["tokens"] == t and r["impl"] == i) for i in ("logits", "fused_chunked"))
        if a["status"] == b["status"] == "measured":
            ratios.append({"tokens": t, "time_fused_over_logits": b["time_s"] / a["time_s"],
                           "peak_fused_over_logits": (b["peak_gib"] / a["peak_gib"]) if a["peak_gib"] else None,
                           "loss_rel_diff": abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-9)})
    liger = device == "cuda" and installed("liger_kernel")
    return {"status": "measured", "device": device, "shape": shape, "fused_kernel": "liger" if liger else "torch",
            "rows": rows, "ratios": ratios}


def bench_part(name: str, out_dir: Path, deadline: float, dry_run: bool) -> dict:
    needs, argv, limit = BENCHES[name]
    missing = [m for m in needs if not installed(m)]
    if missing:
        return {"status": "skipped", "why": f"not installed: {', '.join(missing)}"}
    if dry_run:
        return {"status": "skipped", "why": "--dry-run"}
    limit = min(limit, int(deadline - time.monotonic()))
    if limit < 30:
        return {"status": "skipped", "why": "time budget spent"}
    result = out_dir / f"bench_{name}.json"
    cmd = [sys.executable, *argv, "--out", str(result)]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "limit_s": limit, "cmd": " ".join(argv)}
    rec = {"cmd": " ".join(argv), "rc": p.returncode, "wall_s": round(time.monotonic() - t0, 1)}
    if p.returncode != 0 or not result.exists():
        return {**rec, "status": "failed", "tail": (p.stdout + p.stderr)[-2000:]}
    return {**rec, "status": "measured", "result": json.loads(result.read_text())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "results"),
                   help="folder of gpu_check.json (default $OUT, else bench/results)")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, no sub-benches (tests)")
    p.add_argument("--budget-s", type=float, default=540, help="wall-clock budget for all parts")
    args = p.parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"env": environment(), "dry_run": args.dry_run}
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        report["loss"] = {"status": "skipped", "why": "no CUDA device"}
    else:
        report["loss"] = loss_part(DRY_SHAPE if args.dry_run else GPU_SHAPE, "cuda" if cuda else "cpu")
    for name in BENCHES:
        report[name] = bench_part(name, out_dir, deadline, args.dry_run)
        print(f"gpu_check: {name}: {report[name]['status']} {report[name].get('why', '')}", flush=True)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    for r in report["loss"].get("ratios", []):
        print(f"gpu_check: loss @ {r['tokens']} tokens: fused/logits time {r['time_fused_over_logits']:.2f}, "
              f"peak {r['peak_fused_over_logits'] if r['peak_fused_over_logits'] is None else round(r['peak_fused_over_logits'], 3)}, "
              f"loss rel diff {r['loss_rel_diff']:.1e}")
    print(f"gpu_check: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
