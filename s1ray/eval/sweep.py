"""An evaluation sweep: datasets x methods x budgets (+ majority voting), resumable.

``run_sweep(cfg)`` plans one *sample* per (dataset, question, mode, method, budget, sample
index), skips the ones already in the sample log (:mod:`s1ray.eval.samples`), generates the rest through a
backend (Ray engine actors or a Serve endpoint) with ``cfg.concurrency`` requests in flight,
grades each in the driver, appends finished samples in batches, and then writes
(:mod:`s1ray.eval.report`)

* ``metrics.md`` / ``metrics.csv`` -- the paper's Table 3 per dataset (Control, Scaling,
  Performance per method); ``points.csv`` -- every (dataset, method, budget); ``voting.csv``;
* ``accuracy_vs_thinking.png`` and ``voting_vs_forcing.png``;
* ``samples.parquet`` (the same samples, for dataframes).

Voting samples (mode ``vote``) are drawn once, ``max(n_votes)`` per question; the vote for
each n uses the first n, so n = 1, 2, 4, 8 cost 8 samples, not 15.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s1ray.engine.control import within_bounds
from s1ray.eval.config import BudgetSpec, EvalConfig
from s1ray.eval.data import EvalItem, load_dataset_items
from s1ray.answers import extract_answer, is_equivalent
from s1ray.eval.report import write_reports
from s1ray.eval.samples import SampleWriter, read_samples, sample_key
from s1ray.storage import Location

RUN_FILE = "run.json"


class SetupMismatch(ValueError):
    """The output directory holds samples made under different generation settings."""


@dataclass(frozen=True)
class SampleSpec:
    item: EvalItem
    mode: str  # "seq" (a point on the scaling curve) or "vote" (a majority-voting sample)
    method: str
    budget: BudgetSpec
    sample: int
    seed: int
    temperature: float

    @property
    def key(self) -> tuple:
        return sample_key(
            {"dataset": self.item.dataset, "id": self.item.id, "mode": self.mode,
             "method": self.method, "budget": self.budget.label, "sample": self.sample}
        )


@dataclass
class SweepResult:
    output_dir: str  # a local path or a URI (s3://...)
    planned: int = 0
    skipped: int = 0  # already in samples.jsonl
    generated: int = 0  # new generations this run
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    startup_s: float = 0.0
    gen_wall_s: float = 0.0
    gen_tokens: int = 0
    method_rows: list[dict] = field(default_factory=list)
    point_rows: list[dict] = field(default_factory=list)
    vote_rows: list[dict] = field(default_factory=list)
    files: dict[str, Path | str] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        return self.gen_tokens / self.gen_wall_s if self.gen_wall_s > 0 else None


# ------------------------------------------------------------------ planning
def load_items(cfg: EvalConfig) -> dict[str, list[EvalItem]]:
    out = {}
    for d in cfg.datasets:
        out[d.name] = load_dataset_items(
            d.name, path=d.path, hf_name=d.hf_name, hf_config=d.hf_config, split=d.split, kind=d.kind,
            question_field=d.question_field, answer_field=d.answer_field, id_field=d.id_field,
            prompt_template=d.prompt_template, limit=d.limit or cfg.limit, seed=cfg.seed,
        )
    return out


def plan_sweep(cfg: EvalConfig, items: dict[str, list[EvalItem]]) -> list[SampleSpec]:
    specs = []
    for qs in items.values():
        for method in cfg.methods:
            for budget in cfg.budgets_for(method):
                for it in qs:
                    for i in range(cfg.samples_per_budget):
                        specs.append(SampleSpec(it, "seq", method, budget, i, cfg.seed + i, cfg.temperature))
        if cfg.n_votes:
            vb = cfg.voting_budget()
            for it in qs:
                for i in range(max(cfg.n_votes)):
                    specs.append(SampleSpec(it, "vote", cfg.vote_method, vb, i, cfg.seed + i, cfg.vote_temperature))
    return specs


def payload(spec: SampleSpec, cfg: EvalConfig) -> dict[str, Any]:
    # Greedy decoding needs no seed, and an unseeded request spares vLLM a per-request generator
    # (whose CPU build cannot rewind it under chunked prefill). Rejection sampling samples at
    # temperature 1 even when asked for 0, so it keeps its seed.
    seeded = spec.temperature > 0 or spec.method == "rejection_sampling"
    return {
        "messages": [{"role": "user", "content": spec.item.question}],
        "method": spec.method,
        "min_thinking_tokens": spec.budget.min,
        "max_thinking_tokens": spec.budget.max,
        "num_waits": spec.budget.num_waits,
        "max_answer_tokens": cfg.max_answer_tokens,
        "temperature": spec.temperature,
        "top_p": cfg.top_p,
        "seed": spec.seed if seeded else None,
        "continuation": cfg.continuation_for(spec.budget),
        "format": cfg.reasoning_format,
    }


# ------------------------------------------------------------------ grading
def extract(answer_text: str) -> str | None:
    """The answer in a model's answer section. A forced end already wrote "Final Answer:"
    before the answer section, so a bare answer ("42. Because...") counts as one."""
    return extract_answer(answer_text) or extract_answer("Final Answer: " + (answer_text or "").strip())


def grade_answer(answer_text: str, gold: str) -> tuple[str | None, bool]:
    """(extracted answer, correct?): runs in the grading process (or inline)."""
    pred = extract(answer_text)
    return pred, pred is not None and is_equivalent(pred, gold)


def make_record(
    spec: SampleSpec,
    res: dict[str, Any],
    cfg: EvalConfig,
    latency_s: float,
    graded: tuple[str | None, bool] | None = None,
) -> dict[str, Any]:
    it, b = spec.item, spec.budget
    pred, correct = graded if graded is not None else grade_answer(res["answer"], it.answer)
    rec = {
        "dataset": it.dataset, "id": it.id, "mode": spec.mode, "method": spec.method,
        "budget": b.label, "sample": spec.sample,
        "min_thinking_tokens": b.min, "max_thinking_tokens": b.max, "budget_num_waits": b.num_waits,
        "continuation": cfg.continuation_for(b),
        "temperature": spec.temperature, "seed": spec.seed, "kind": it.kind, "gold": it.answer,
        "extracted": pred, "correct": correct,
        "thinking_tokens": res["thinking_tokens"], "answer_tokens": res["answer_tokens"],
        "num_waits": res["num_waits"], "forced_end": res["forced_end"],
        "within_bounds": within_bounds(res["thinking_tokens"], (b.min, b.max)),
        "rounds": res.get("rounds", 1), "tries": res.get("tries", 1), "accepted": res.get("accepted", True),
        "finish_reason": res.get("finish_reason"), "latency_s": round(latency_s, 3),
        "answer": res["answer"],
    }
    if cfg.save_thinking:
        rec["thinking"] = res["thinking"]
    return rec


# ------------------------------------------------------------------ running
def make_backend(cfg: EvalConfig):
    from s1ray.eval.backends import HttpBackend, RayEngineBackend

    if cfg.base_url is not None:
        from s1ray.http_client import read_api_key

        key = read_api_key(cfg.api_key_env, ValueError)
        return HttpBackend(cfg.base_url, cfg.served_model, key, cfg.request_timeout_s, cfg.concurrency)
    return RayEngineBackend(
        cfg.engine, cfg.num_engines, cfg.actor_num_cpus, cfg.actor_num_gpus,
        max_concurrency=-(-cfg.concurrency // cfg.num_engines),
    )


def ensure_ray(cfg: EvalConfig) -> bool:
    """Connect to (or start) Ray; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(ignore_reinit_error=True, **cfg.ray.init_kwargs())
    return True


def _grader(workers: int):
    """An optional process pool for grading (``grade_workers``). math-verify costs a few ms per
    answer (sympy); by default that runs in the driver's event loop between requests (measured
    cheaper on a 2-core machine: the pool's IPC cost more CPU than it saved). A pool helps where
    samples finish faster than one core grades them; its SIGALRM timeouts work there too."""
    if workers < 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(grade_answer, "0", "0")  # import math-verify there while the engines start
    return pool


async def _grade(pool, answer: str, gold: str) -> tuple[str | None, bool]:
    if pool is not None:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, grade_answer, answer, gold)
        except Exception:  # a broken pool must not lose the sample: grade here instead
            pass
    return grade_answer(answer, gold)


async def _generate_all(specs, backend, cfg: EvalConfig, writer: SampleWriter, res: SweepResult, pool=None) -> None:
    from s1ray.console import progress

    queue: asyncio.Queue = asyncio.Queue()
    for s in specs:
        queue.put_nowait(s)
    buffer: list[dict] = []
    last_flush = time.monotonic()
    bar = progress(len(specs), f"eval {cfg.name}", unit="sample", enabled=cfg.progress)
    t0 = time.perf_counter()

    def flush(force: bool = False) -> None:
        nonlocal last_flush
        if buffer and (force or len(buffer) >= cfg.flush_every or time.monotonic() - last_flush > 10):
            writer.append(buffer)
            buffer.clear()
            last_flush = time.monotonic()

    grading: set[asyncio.Task] = set()

    async def record(spec: SampleSpec, out: dict[str, Any], latency: float) -> None:
        rec = make_record(spec, out, cfg, latency, await _grade(pool, out["answer"], spec.item.answer))
        buffer.append(rec)
        flush()

    async def worker() -> None:
        while True:
            try:
                spec = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            try:
                out = await backend.generate(payload(spec, cfg))
            except Exception as exc:  # one bad request must not end the sweep; a rerun retries it
                res.failed += 1
                if len(res.errors) < 10:
                    cause = getattr(exc, "cause", None) or exc  # unwrap Ray's RayTaskError
                    msg = " ".join(f"{type(cause).__name__}: {cause}".split())
                    res.errors.append(f"{'/'.join(spec.key)}: {msg[:400]}")
                bar.update(1)
                continue
            res.generated += 1
            res.gen_tokens += out["thinking_tokens"] + out["answer_tokens"]
            res.gen_wall_s = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(tok_s=f"{res.gen_tokens / max(res.gen_wall_s, 1e-9):.0f}", refresh=False)
            # Grade beside the next request, not before it: the engine keeps `concurrency` in flight.
            task = asyncio.create_task(record(spec, out, time.perf_counter() - t))
            grading.add(task)
            task.add_done_callback(grading.discard)

    try:
        await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, len(specs)))))
        await asyncio.gather(*list(grading))
    finally:
        flush(force=True)
        bar.close()


async def _run(specs, backend, cfg, writer, res) -> None:
    pool = _grader(cfg.grade_workers)
    try:
        t0 = time.perf_counter()
        await backend.start()
        res.startup_s = time.perf_counter() - t0
        try:
            await _generate_all(specs, backend, cfg, writer, res, pool)
        finally:
            await backend.close()
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def fingerprint(cfg: EvalConfig) -> dict[str, Any]:
    """What makes a stored sample valid for this config beyond its key (model, sampling, prompts)."""
    eng = cfg.engine
    return {
        "model": eng.model if eng else cfg.served_model,
        "format": cfg.reasoning_format or (eng.format if eng else None),
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "seed": cfg.seed,
        "max_answer_tokens": cfg.max_answer_tokens,
        "vote_temperature": cfg.vote_temperature,
        "continuation": cfg.continuation,
        "datasets": {d.name: d.model_dump(exclude={"name", "limit"}) for d in cfg.datasets},
    }


def check_setup(out_dir: Location, cfg: EvalConfig) -> None:
    """Refuse to mix samples from different setups in one directory; record this setup."""
    import json

    new = fingerprint(cfg)
    if out_dir.exists(RUN_FILE):
        old = json.loads(out_dir.read_text(RUN_FILE))
        changed = [k for k in new if k != "datasets" and k in old and old[k] != new[k]]
        old_ds = old.get("datasets", {})
        changed += [f"datasets.{n}" for n, spec in new["datasets"].items() if n in old_ds and old_ds[n] != spec]
        if changed:
            raise SetupMismatch(
                f"{out_dir} holds samples made with other settings ({', '.join(changed)} changed); "
                "give a new output_dir, or delete it to start over"
            )
        new["datasets"] = {**old.get("datasets", {}), **new["datasets"]}
    out_dir.write_text(RUN_FILE, json.dumps(new, indent=2, sort_keys=True) + "\n")


def run_sweep(cfg: EvalConfig, backend=None, report: bool = True) -> SweepResult:
    """Plan, skip what is done, generate the rest, write reports. ``backend``: inject one (tests)."""
    from s1ray.storage import announce, check_model

    out_dir = Location(cfg.resolved_output_dir())
    if cfg.engine is not None:  # before any engine actor starts
        check_model(cfg.engine.model, "engine.model")
    specs = plan_sweep(cfg, load_items(cfg))
    out_dir.makedirs()
    res = SweepResult(str(out_dir))
    check_setup(out_dir, cfg)
    res.planned = len(specs)
    done = {sample_key(r) for r in read_samples(out_dir)}
    pending = [s for s in specs if s.key not in done]
    res.skipped = res.planned - len(pending)
    if pending:
        started_ray = False
        if backend is None:
            if cfg.base_url is None:
                from s1ray.storage import check_shared

                started_ray = ensure_ray(cfg)
                check_shared(str(out_dir), "output_dir")
            backend = make_backend(cfg)
        try:
            asyncio.run(_run(pending, backend, cfg, SampleWriter(out_dir), res))
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    if report:
        write_reports(cfg, {s.key for s in specs}, res)
    announce(f"eval {cfg.name}", str(out_dir))
    return res
