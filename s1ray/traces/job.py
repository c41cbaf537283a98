"""The trace-generation job: questions in, sharded traces out, resumable.

:func:`run_traces` reads the questions, expands them to ``(id, sample_index)`` units, drops
the units already in completed shards, generates the rest with the configured teacher (local
vLLM via Ray Data, or an API) and streams the finished rows into a :class:`ShardWriter`.
Progress (rows done / total, errors, rows/s, output tokens/s, ETA) is logged every
``progress_interval_s``.

Failure policy:

* a row that fails is written with its ``error`` (after retries, for API teachers); a rerun
  with ``retry_errors: true`` generates it again and the new row supersedes it;
* a job in which *every* row fails (bad key, dead endpoint, engine that cannot start) raises
  :class:`TracesJobError` -- those rows are not recorded, so a rerun retries them;
* more than ``max_error_fraction`` of this run's rows failing also raises (rows are kept);
* an exception mid-run (engine died, Ctrl-C, ``fail_after_shards``) loses at most the rows not
  yet in a completed shard; the rerun generates exactly those.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from s1ray.traces.config import TracesConfig
from s1ray.traces.inputs import read_questions
from s1ray.traces.output import AllRowsFailed, InjectedFailure, ShardWriter
from s1ray.traces.records import finish_row, make_units, token_counter, unit_key

log = logging.getLogger("s1ray.traces")


class TracesJobError(RuntimeError):
    """The job as a whole failed; the message says why and what was kept."""


@dataclass
class TracesResult:
    output_dir: str
    total: int  # units (questions x k) in the input
    already_done: int  # in completed shards before this run
    generated: int  # rows written by this run
    ok: int
    errors: int
    shards_written: int
    requests: int | None  # API: HTTP requests made
    elapsed_s: float
    first_row_s: float | None  # start-up: until the first row came back
    rows_per_s: float  # since the first row
    output_tokens: int  # teacher tokens (API: usage.completion_tokens when given)
    output_tokens_per_s: float  # since the first row
    error_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    """Rows done / total, errors, rows/s and output tokens/s, logged every ``interval_s``.

    Rates are measured from the first finished row, so an engine's start-up (tens of seconds
    on a CPU, minutes for a big model) does not hide the generation rate; the start-up is
    logged on its own. (While everything has come in one burst, they are over the whole run.)
    """

    def __init__(self, total: int, done_before: int, interval_s: float):
        self.total = total
        self.done_before = done_before
        self.interval = interval_s
        self.t0 = time.perf_counter()
        self.t_first: float | None = None
        self.last_log = self.t0
        self.rows = 0
        self.errors = 0
        self.tokens = 0

    def update(self, row: dict[str, Any]) -> None:
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
            log.info("traces: first row after %.1f s", now - self.t0)
        self.rows += 1
        if row.get("error") is not None:
            self.errors += 1
        ct = row.get("completion_tokens")
        self.tokens += int(ct) if ct is not None else int(row.get("thinking_tokens") or 0) + int(row.get("answer_tokens") or 0)
        if now - self.last_log >= self.interval:
            self.last_log = now
            self.log()

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)

    def rates(self) -> tuple[float, float]:
        """(rows/s, output tokens/s) since the first row."""
        if self.t_first is None:
            return 0.0, 0.0
        now = time.perf_counter()
        dt = now - self.t_first
        if dt < 1.0:  # everything so far came in one burst: fall back to the whole run
            dt = now - self.t0
        return self.rows / dt, self.tokens / dt

    def log(self, final: bool = False) -> None:
        done = self.done_before + self.rows
        todo = self.total - done
        rows_s, tok_s = self.rates()
        eta = f", eta {todo / rows_s:.0f} s" if rows_s > 0 and todo > 0 and not final else ""
        log.info(
            "traces: %d/%d rows (%.1f%%), %d errors, %.2f rows/s, %.0f output tok/s, %.0f s elapsed%s",
            done, self.total, 100.0 * done / max(self.total, 1), self.errors, rows_s, tok_s, self.elapsed(), eta,
        )


def _init_ray(cfg: TracesConfig) -> bool:
    """Start or join Ray for a local teacher; True if this call started it (we shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(**cfg.ray.init_kwargs())
    return True


def _generate(cfg: TracesConfig, pending: list[dict[str, Any]], sink, transport=None) -> int | None:
    if cfg.teacher.kind == "api":
        from s1ray.traces.api import run_api

        count = token_counter(cfg.student_tokenizer_path)
        common = dict(teacher_model=cfg.teacher.label, reasoning_format=cfg.reasoning_format,
                      thinking_open=cfg.prompt.opens_thinking, count=count)

        def on_done(unit, res, err, attempts, latency):
            if res is None:
                row = finish_row(unit, error=err, attempts=attempts, latency_s=latency, **common)
            else:
                row = finish_row(unit, text=res.content, reasoning_content=res.reasoning,
                                 finish_reason=res.finish_reason, prompt_tokens=res.prompt_tokens,
                                 completion_tokens=res.completion_tokens, attempts=attempts,
                                 latency_s=latency, **common)
            sink(row)

        return run_api(pending, cfg, on_done, transport=transport)

    from s1ray.traces.local import run_local

    from s1ray.storage import check_shared

    started = _init_ray(cfg)
    try:
        check_shared(cfg.output_dir, "output_dir")  # the driver writes; a later stage on another node reads
        run_local(pending, cfg, sink)
    finally:
        if started:
            import ray

            ray.shutdown()
    return None


def run_traces(cfg: TracesConfig, *, transport=None, on_row=None) -> TracesResult:
    """Run the job described by ``cfg`` (see the module docstring). ``transport``: an httpx
    transport for API teachers (tests); ``on_row``: called with every new row (benchmarks)."""
    from s1ray.storage import announce, check_model, resolve_output

    # shards + manifest go through pyarrow filesystems: a local path or s3://
    cfg = cfg.model_copy(update={"output_dir": resolve_output(cfg.output_dir, "output_dir")})
    if cfg.teacher.kind == "api":
        from s1ray.traces.api import api_key

        api_key(cfg.teacher)  # no key: fail now, before reading anything
    else:  # before any engine actor starts
        check_model(cfg.teacher.model, "teacher.engine.model")
    questions = read_questions(cfg.input)
    units = make_units(questions, cfg.samples_per_question)
    writer = ShardWriter(cfg.output_dir, cfg.output_format, cfg.shard_size, cfg.generation_fingerprint(),
                         name=cfg.name, fail_after_shards=cfg.fail_after_shards, retry_errors=cfg.retry_errors,
                         on_shard=lambda e: log.info("traces: wrote %s (%d rows, %d errors)",
                                                     e["file"], e["rows"], e["errors"]))
    pending = [u for u in units if unit_key(u) not in writer.done]
    retried = sum(unit_key(u) in writer.key_errors for u in pending)
    log.info("traces: %d questions x %d samples = %d rows; %d already done, %d to generate%s -> %s",
             len(questions), cfg.samples_per_question, len(units), len(units) - len(pending),
             len(pending), f" ({retried} retried errors)" if retried else "", cfg.output_dir)
    progress = Progress(len(units), len(units) - len(pending), cfg.progress_interval_s)
    examples: list[str] = []

    def sink(row: dict[str, Any]) -> None:
        if writer.add(row):
            progress.update(row)
            if on_row is not None:
                on_row(row)
            if row.get("error") is not None and len(examples) < 5:
                examples.append(f"{row['id']}#{row['sample_index']}: {row['error']}")

    requests = None
    if pending:
        try:
            requests = _generate(cfg, pending, sink, transport)
            writer.flush()
        except AllRowsFailed as exc:
            raise TracesJobError(f"permanent failure: {exc}") from None
        except InjectedFailure:
            raise
        except KeyboardInterrupt:
            _salvage(writer)
            raise
        except Exception as exc:  # the engine or the cluster failed: keep what finished
            _salvage(writer)
            raise TracesJobError(
                f"generation failed after {writer.rows_written} rows were written in this run "
                f"({type(exc).__name__}: {str(exc)[:2000]}); rerun to resume"
            ) from exc
        progress.log(final=True)

    missing = [u for u in pending if unit_key(u) not in writer.done]
    el = progress.elapsed()
    rows_s, tok_s = progress.rates()
    announce(f"traces {cfg.name}", cfg.output_dir)
    res = TracesResult(
        output_dir=cfg.output_dir, total=len(units), already_done=len(units) - len(pending),
        generated=writer.rows_written, ok=writer.rows_ok, errors=writer.rows_err,
        shards_written=writer.shards_written, requests=requests, elapsed_s=round(el, 3),
        first_row_s=round(progress.t_first - progress.t0, 3) if progress.t_first is not None else None,
        rows_per_s=round(rows_s, 3), output_tokens=progress.tokens,
        output_tokens_per_s=round(tok_s, 1), error_examples=examples,
    )
    if missing:
        raise TracesJobError(f"{len(missing)} rows never came back from the engine (e.g. "
                             f"{[unit_key(u) for u in missing[:3]]}); rerun to generate them")
    if writer.rows_written and writer.rows_err / writer.rows_written > cfg.max_error_fraction:
        raise TracesJobError(
            f"{writer.rows_err}/{writer.rows_written} rows failed (> max_error_fraction "
            f"{cfg.max_error_fraction}); they are recorded with their errors, e.g. {examples[:2]}"
        )
    return res


def _salvage(writer: ShardWriter) -> None:
    """Write the rows finished before a crash (only if some succeeded; never raises)."""
    try:
        if writer.buffer and writer.rows_ok:
            writer.fail_after_shards = None
            writer.flush()
    except Exception as exc:  # noqa: BLE001
        log.warning("traces: could not save the last %d rows: %s", len(writer.buffer), exc)
