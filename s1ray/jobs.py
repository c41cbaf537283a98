"""One function per job, called with its validated config by both ``s1ray <job>`` (the CLI) and
``jobs/*.py`` (the ``ray job submit`` entrypoints).

Each prints a short summary on the terminal and returns the exit status: 0 done, 1 failed.
Bad config or input raises one of :func:`bad_input_errors` (the CLI's status 2). Stages that
run for minutes keep their full output in a log file (:mod:`s1ray.console`); the terminal gets
a progress bar and one line per stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from s1ray.console import captured, say


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the config or its inputs are wrong (not that the job broke)."""
    from pydantic import ValidationError

    from s1ray.config import ConfigError
    from s1ray.dataio import DataError
    from s1ray.engine.budget import BudgetError
    from s1ray.eval.sweep import SetupMismatch
    from s1ray.traces.output import OutputMismatch

    return (ConfigError, ValidationError, BudgetError, DataError, SetupMismatch, OutputMismatch, FileNotFoundError)


def _local_logs(output: str, name: str) -> Path:
    """Where a job's log goes: beside its outputs, or under ./runs/logs when those are remote."""
    if "://" in output:
        return Path("runs") / "logs" / f"{name}.log"
    return Path(output) / "logs" / f"{name}.log"


def _logged(job: str, name: str, output: str, work):
    """``work()`` with its output captured in the job's log file; the terminal gets the log's path."""
    log = _local_logs(output, job)
    say(f"s1ray {job} {name}: log {log}")
    with captured(log):
        return work()


# -- jobs ---------------------------------------------------------------------------------
def pipeline(cfg, args: argparse.Namespace) -> int:
    from s1ray.pipeline.report import final_lines
    from s1ray.pipeline.run import PipelineRunner

    runner = PipelineRunner(cfg)
    say(f"s1ray pipeline {cfg.name}: stages {', '.join(cfg.stages)}")
    copied = f" (each copied to {runner.at('logs')})" if runner.remote else ""
    say(f"  outputs in {runner.work}, one log per stage in {runner.logs_dir}{copied}")
    summary = runner.run()
    for line in final_lines(summary):
        say(line)
    return 0


def curate(cfg, args: argparse.Namespace) -> int:
    from s1ray.curation.pipeline import run_curation

    res = _logged("curate", cfg.name, cfg.output_dir, lambda: run_curation(cfg))
    for stage, st in res.stages.items():
        how = "cached" if st.get("cached") else f"{st.get('elapsed_s', 0):.1f} s"
        say(f"  {stage:<11} {st.get('rows_in', '-')!s:>7} in {st.get('rows_out', '-')!s:>7} out  ({how})")
    say(f"curated {res.final_rows} rows: {res.dataset_dir}; report: {res.report_dir}")
    return 0


def traces(cfg, args: argparse.Namespace) -> int:
    from s1ray.traces.job import run_traces

    res = _logged("traces", cfg.name, cfg.output_dir, lambda: run_traces(cfg))
    say(f"traces: {res.generated} rows generated ({res.errors} errors), {res.already_done} already done, "
        f"{res.output_tokens_per_s:.0f} output tok/s -> {res.output_dir}")
    for e in res.error_examples[:3]:
        say(f"  error: {e}")
    return 0


def train(cfg, args: argparse.Namespace) -> int:
    from s1ray.train.trainer import describe_data, prepare_data, resolve_paths, run

    if getattr(args, "toy_data", None) and not Path(cfg.dataset.source).exists():
        from s1ray.train.toy import write_toy_dataset

        say(f"wrote {write_toy_dataset(cfg.dataset.source, args.toy_data)}")
    if getattr(args, "dry_run", False):
        data, _ = prepare_data(resolve_paths(cfg))
        say(describe_data(data.stats))
        return 0
    log = _local_logs(f"{cfg.storage_path}/{cfg.name}", "train")
    say(f"s1ray train {cfg.name}: log {log}")
    ray_init = {"num_cpus": args.ray_num_cpus} if getattr(args, "ray_num_cpus", None) else None
    import ray

    with captured(log):
        started = not ray.is_initialized()
        try:
            res = run(cfg, ray_init=ray_init)
        finally:
            if started:  # here, not at exit: Ray's shutdown output belongs in the log
                ray.shutdown()
    m = res.metrics
    say(f"trained {m.get('step', '?')} steps, loss {m.get('loss', float('nan')):.4f}; "
        f"checkpoint {res.checkpoint}; model exported to {res.export_dir}")
    return 0


def evaluate(cfg, args: argparse.Namespace) -> int:
    from s1ray.eval.report import summary
    from s1ray.eval.sweep import run_sweep

    if getattr(args, "dry_run", False):
        return _eval_dry_run(cfg)
    res = _logged("eval", cfg.name, cfg.resolved_output_dir(), lambda: run_sweep(cfg))
    summary(res, echo=say)
    if "metrics.md" in res.files:
        say(f"tables: {res.files['metrics.md']}; plot: {res.files.get('accuracy_vs_thinking.png')}")
    return 1 if res.failed else 0


def _eval_dry_run(cfg) -> int:
    from collections import Counter

    from s1ray.eval.samples import read_samples, sample_key
    from s1ray.eval.sweep import load_items, plan_sweep

    specs = plan_sweep(cfg, load_items(cfg))
    done = {sample_key(r) for r in read_samples(cfg.resolved_output_dir())}
    todo = Counter((s.item.dataset, s.mode, s.method) for s in specs if s.key not in done)
    say(f"{len(specs)} samples planned, {len(specs) - sum(todo.values())} already done")
    for (d, mode, m), n in sorted(todo.items()):
        say(f"  {d:<14} {mode:<4} {m:<20} {n} to generate")
    return 0


def serve(cfg, args: argparse.Namespace) -> int:
    """Run the Serve app in this process until SIGINT/SIGTERM (``serve run`` for a typed config)."""
    import signal
    import threading

    import ray
    from ray import serve as ray_serve

    from s1ray.serve.app import build_app

    cfg = resolve_serve_paths(cfg)
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ray_serve.start(http_options={"host": args.host, "port": args.port})
    try:
        ray_serve.run(build_app(cfg), name="s1ray", route_prefix="/", blocking=False)
        say(f"serving {cfg.model_name} at http://{args.host}:{args.port}/v1 (Ctrl-C to stop)")
        stop.wait()
    finally:
        ray_serve.shutdown()
        ray.shutdown()
    return 0


def resolve_serve_paths(cfg):
    """Pin a local model path (replicas may start in another directory); refuse one that is missing."""
    from s1ray.config import ConfigError

    for field in ("model", "tokenizer"):
        value = getattr(cfg.engine, field)
        if not value:
            continue
        p = Path(value).expanduser()
        if p.exists():
            setattr(cfg.engine, field, str(p.resolve()))
        elif value.startswith((".", "/", "~")):
            raise ConfigError(f"engine.{field}: no model at {value!r}")
    return cfg
