"""Training benchmark: SFT tokens/s and MFU, sequence packing on vs off, from one run.

Both configurations run the real job (Ray Train + DeepSpeed ZeRO-3, ``s1ray.train``) on the
same toy s1K-style data in one local Ray cluster, one after the other:

* off: one example per row, ``micro_batch_size`` rows per forward (padded when > 1);
* on:  examples bin-packed into ``block_size`` blocks, one padding-free row per forward with
       position ids restarting per example (block-diagonal attention).

A third run repeats "off" with ``logging.report_every`` = the number of steps (one report, at
the final checkpoint) instead of a ``ray.train.report`` every step: Ray Train v2's controller
takes one report per 2 s poll, which throttles short steps.

Reported per configuration: median over the steady-state steps (all but the first two) of
real (non-pad) tokens/s summed over workers and of MFU = model FLOPs (6N + causal attention) /
(step time x workers x peak), both over the step's compute time; and wall-clock tokens/s over
the same steps (step ends' timestamps, so reporting and other per-step overhead count). On CPU
the peak is whatever ``--peak-tflops`` says (default: an assumed 1 TFLOP/s per worker) -- the
ratios are the numbers to look at there. Printed: the rows and the ratios; JSON to ``--out``.

    python bench/bench_train.py                                  # tiny model, 2 CPU workers
    python bench/bench_train.py --gpu --workers 1 --shape qwen2.5-1.5b --block 16384 --examples 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))

# Random-init shapes of Qwen2.5 models (their config.json), for GPU runs.
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def make_model(out: Path, shape: str | None) -> str:
    from s1ray.tiny_model import make_tiny_model

    path = make_tiny_model(out, seed=0)
    if shape:  # same locally trained tokenizer, bigger random model (vocab >= the tokenizer's)
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        base = json.loads((path / "config.json").read_text())
        conf = Qwen2Config(**SHAPES[shape], max_position_embeddings=131072, rope_theta=1e6,
                           eos_token_id=base["eos_token_id"], pad_token_id=base.get("pad_token_id"))
        torch.manual_seed(0)
        Qwen2ForCausalLM(conf).to(torch.bfloat16).save_pretrained(path)
    return str(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--block", type=int, default=1024, help="block_size (packing) and max sequence length")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per configuration")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=None, help="rows per step (default: 2 x workers)")
    p.add_argument("--micro", type=int, default=1, help="micro_batch_size of the unpacked run")
    p.add_argument("--zero", type=int, default=3, choices=[2, 3])
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--shape", choices=sorted(SHAPES), help="random-init model of these shapes (default: tiny)")
    p.add_argument("--peak-tflops", type=float, default=None, help="per-worker peak for MFU (default: device table / assumed)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_train.json"))
    return p


def _row(res, t0: float) -> dict:
    """One configuration's figures, from its exported checkpoint's per-step history."""
    meta = json.loads((Path(res.checkpoint) / "s1ray_meta.json").read_text())
    hist = meta["history"][2:] or meta["history"]
    return {
        "tokens_per_s": statistics.median(h["tokens_per_s"] for h in hist),
        # wall clock from the end of the step before the window to the end of the last
        "wall_tokens_per_s": sum(h["tokens"] for h in hist[1:]) / max(hist[-1]["time"] - hist[0]["time"], 1e-9)
        if len(hist) > 1 else float("nan"),
        "mfu": statistics.median(h["mfu"] for h in hist),
        "padding_fraction": statistics.mean(h["padding_fraction"] for h in hist),
        "step_time_s": statistics.median(h["step_time_s"] for h in hist),
        "tokens_per_step": statistics.mean(h["tokens"] for h in hist),
        "rows": res.data_stats["rows"],
        "peak_tflops": res.metrics["peak_tflops"],
        "peak_source": res.metrics["peak_source"],
        "wall_s": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    import ray

    from s1ray.train.config import TrainConfig
    from s1ray.train.toy import write_toy_dataset
    from s1ray.train.trainer import run

    tmp = Path(tempfile.mkdtemp(prefix="s1ray-bench-train-"))
    model = make_model(tmp / "model", args.shape)
    # toy "reasoning" of 1..max_steps steps (~12 tokens each): lengths spread from ~70 tokens to about
    # block/2, mean ~block/4 (s1K-1.1 in 32k blocks: a few examples per block)
    data = write_toy_dataset(tmp / "toy.jsonl", args.examples, seed=0, max_steps=max(2, args.block // 32))
    G = args.global_batch or 2 * args.workers
    common = dict(
        model=model, dataset={"source": str(data)}, block_size=args.block, num_workers=args.workers,
        use_gpu=args.gpu, epochs=1000, max_steps=args.steps, lr=1e-4, warmup_ratio=0.0, zero_stage=args.zero,
        bf16=True, gradient_checkpointing=True, storage_path=str(tmp / "runs"), max_failures=0,
        peak_tflops=args.peak_tflops, global_batch_size=G, logging={"print_every": 0},
        torch_extensions_dir=os.environ["TORCH_EXTENSIONS_DIR"],
    )
    if not args.gpu:
        common["resources_per_worker"] = {"CPU": 1}
    configs = {
        "off": TrainConfig(name="packing-off", packing=False, micro_batch_size=args.micro, **common),
        "on": TrainConfig(name="packing-on", packing=True, micro_batch_size=1, **common),
        "off/r*": TrainConfig(name="packing-off-report-end", packing=False, micro_batch_size=args.micro,
                              **{**common, "logging": {"print_every": 0, "report_every": args.steps}}),
    }
    ray.init(num_cpus=max(2, args.workers) if not args.gpu else None, include_dashboard=False,
             object_store_memory=500 * 1024**2)
    rows = {}
    try:
        for key, cfg in configs.items():
            t0 = time.perf_counter()
            res = run(cfg, echo=lambda s: None)
            rows[key] = _row(res, t0)
    finally:
        ray.shutdown()
    stats = res.data_stats
    ratio = rows["on"]["tokens_per_s"] / rows["off"]["tokens_per_s"]
    device = "GPU" if args.gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"bench_train: {args.shape or 'tiny'} model, {args.workers} workers on {device}, ZeRO-{args.zero}, "
          f"{args.examples} examples (mean {stats['mean_len']:.0f}, max {stats['max_len']} tokens), block {args.block}, "
          f"{G} rows/step, {args.steps} steps each")
    print("packing: off/on; r*: one ray.train.report at the end instead of one per step")
    print(f"{'packing':<8} {'tokens/s':>10} {'MFU':>8} {'wall tok/s':>11} {'pad':>6} {'step s':>8} {'tok/step':>9} {'rows':>5}")
    for key, r in rows.items():
        print(f"{key:<8} {r['tokens_per_s']:>10.0f} {r['mfu']:>8.2%} {r['wall_tokens_per_s']:>11.0f} "
              f"{r['padding_fraction']:>6.1%} {r['step_time_s']:>8.3f} {r['tokens_per_step']:>9.0f} {r['rows']:>5}")
    print(f"packing on / off tokens/s: {ratio:.2f}x   (MFU peak: {rows['on']['peak_tflops']} TFLOP/s per worker, "
          f"{rows['on']['peak_source']})")
    report_ratio = rows["off/r*"]["wall_tokens_per_s"] / rows["off"]["wall_tokens_per_s"]
    print(f"wall-clock tokens/s, one report at the end / one per step: {report_ratio:.2f}x")
    from _common import write_json

    write_json(args.out, {"bench": "train", "args": vars(args), "rows": rows,
                          "ratios": {"packing on / off, tokens/s": ratio,
                                     "one report at the end / one per step, wall-clock tokens/s": report_ratio},
                          "table": [{"run": k, **{c: v for c, v in r.items() if isinstance(v, (int, float, str))}}
                                    for k, r in rows.items()],
                          "ratio_tokens_per_s": ratio, "ratio_wall_report_end_vs_each_step": report_ratio,
                          "data": stats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
