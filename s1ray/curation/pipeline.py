"""The curation pipeline on Ray Data: ingest -> dedupe -> quality -> difficulty -> domains ->
select -> export, each stage cached on disk (:mod:`s1ray.curation.store`).
This module orders the stages, fingerprints their inputs and starts Ray; each stage is a
module of :mod:`s1ray.curation.stages`.

How a stage runs: its input (the previous stage's ``kept`` parquet files, or the sources) is read
with Ray Data; the per-row work -- schema mapping, MinHash signatures and 8-gram lookups, regex
checks, grading solver samples, embeddings or LLM calls -- runs in ``map_batches`` tasks (the
decision functions are the pure ones of :mod:`~s1ray.curation.filters`); the driver streams the
annotated batches back and writes them, split into ``kept`` and ``rejects`` (every row once, with
its ``reason``), so the counts add up by construction.

Decisions that need every row -- which trace sample to use, the per-question solver verdict, the
final sample -- are made on the driver over *compact* columns only (ids, lengths, flags; never
the question or trace text), then handed back to the tasks as a broadcast object. Dedupe needs
every row too, but its signatures are too large for one process at scale: it runs as Ray Data
shuffles and joins (:mod:`~s1ray.curation.stages.dedupe`) and its decisions never reach the
driver. Heavy trace text is never shuffled or joined: stages carry only a trace's length and key,
and the export stage fetches the text of the ~1,000 selected rows at the end.

Scale notes: the driver holds O(rows) ids and flags in the quality, difficulty and select stages
and writes the stage outputs; on a multi-node cluster ``output_dir`` and input files must be on
storage every node sees (s3:// or NFS, EFS, Lustre...).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from s1ray.curation import sources as S
from s1ray.curation.config import STAGES, CurationConfig
from s1ray.curation.stages import dedupe, difficulty, domains, export, ingest, quality, select
from s1ray.curation.stages.base import CurationError, StageContext
from s1ray.curation.store import fingerprint

__all__ = ["STAGE_VERSIONS", "CurationError", "CurationResult", "Pipeline", "run_curation"]

log = logging.getLogger("s1ray.curation")

# Bump a stage's version when its logic changes: cached outputs of the old logic are then redone.
STAGE_VERSIONS = {"ingest": 1, "dedupe": 1, "quality": 1, "difficulty": 1, "domains": 1, "select": 1, "export": 1}


@dataclass
class CurationResult:
    output_dir: str
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_dir: str = ""
    report_dir: str = ""
    final_rows: int = 0
    elapsed_s: float = 0.0
    eval_sets: dict[str, dict[str, str]] = field(default_factory=dict)  # decontamination: used / skipped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Pipeline(StageContext):
    def __init__(self, cfg: CurationConfig):
        super().__init__(cfg)
        self._ray_started = False
        self._ray_ready = False
        self._stopped = False
        self.result = CurationResult(output_dir=cfg.output_dir)
        from s1ray.console import progress

        self._bar = progress(len(STAGES), f"curation {cfg.name}", unit="stage")

    # -- ray --------------------------------------------------------------------------------
    def _ensure_ray(self) -> None:
        if self._ray_ready:
            return
        import ray
        import ray.data

        if not ray.is_initialized():
            ray.init(**self.cfg.ray.init_kwargs())
            self._ray_started = True
        from s1ray.storage import check_shared

        check_shared(self.cfg.output_dir, "output_dir")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.cfg.progress_bars
        ctx.execution_options.preserve_order = True  # deterministic output files
        self._ray_ready = True

    def shutdown(self) -> None:
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False
            self._ray_ready = False

    # -- stage driver ---------------------------------------------------------------------------
    def _run_stage(self, stage: str, fp_inputs: dict[str, Any], body: Callable[[Path], dict[str, Any]]) -> str:
        if self._stopped:
            return ""
        self._bar.set_postfix_str(stage)
        self._bar.update(1)
        if self.cfg.until is not None and STAGES.index(stage) > STAGES.index(self.cfg.until):
            self._stopped = True
            log.info("curation: stopping after %s (until)", self.cfg.until)
            return ""
        fp = fingerprint({"stage": stage, "version": STAGE_VERSIONS[stage], **fp_inputs})
        forced = stage in self.cfg.force or "all" in self.cfg.force
        if not forced and self.store.is_done(stage, fp):
            self.result.skipped.append(stage)
            self.result.stages[stage] = {**(self.store.marker(stage) or {}).get("stats", {}), "cached": True}
            log.info("curation: %s: cached (inputs and config unchanged)", stage)
            return fp
        self._ensure_ray()
        log.info("curation: %s: running", stage)
        tmp = self.store.begin(stage)
        t0 = time.perf_counter()
        try:
            stats = body(tmp)
        except Exception as exc:
            self.store.abort(tmp)
            raise CurationError(f"stage {stage} failed: {type(exc).__name__}: {exc}") from exc
        el = time.perf_counter() - t0
        stats = {**stats, "elapsed_s": round(el, 3), "rows_per_s": round(stats.get("rows_in", 0) / max(el, 1e-9), 1)}
        if "rows_out" in stats and "rejected" in stats:
            assert stats["rows_in"] == stats["rows_out"] + sum(stats["rejected"].values()), (stage, stats)
        self.store.commit(stage, tmp, fp, stats, config=fp_inputs.get("config"))
        self.result.executed.append(stage)
        self.result.stages[stage] = {**stats, "cached": False}
        log.info("curation: %s: %s rows in, %s out, %s rejected (%.1f s, %.0f rows/s)", stage, stats.get("rows_in"),
                 stats.get("rows_out"), sum(stats.get("rejected", {}).values()), el, stats["rows_per_s"])
        return fp

    def run(self) -> CurationResult:
        from s1ray.curation.domains import msc_file
        from s1ray.curation.evalsets import resolve_eval_sets

        t0 = time.perf_counter()
        c = self.cfg
        # Inputs the driver can check are checked before Ray or any task starts.
        self.eval_sets = resolve_eval_sets(c.decontamination)
        self.result.eval_sets = self.eval_sets.summary()
        log.info("curation: decontamination eval sets: %s", self.result.eval_sets)
        self.store.clean_temp()
        trusted_sources = [r.source for r in c.quality.trusted]
        try:
            fp = self._run_stage("ingest", {"config": [s.model_dump() for s in c.sources],
                                            "inputs": [S.input_fingerprint(s.model_dump()) for s in c.sources]},
                                 partial(ingest.run, self))
            fp = self._run_stage("dedupe", {"upstream": fp, "config": {"dedupe": c.dedupe.model_dump(),
                                            "decontamination": c.decontamination.model_dump(), "trusted": trusted_sources,
                                            "source_order": [s.name for s in c.sources]},
                                            "inputs": self.eval_sets.fingerprint()},
                                 partial(dedupe.run, self))
            trace_inputs = [S.input_fingerprint(t.model_dump()) | {"spec": t.model_dump()} for t in c.quality.traces]
            fp = self._run_stage("quality", {"upstream": fp, "config": c.quality.model_dump(), "inputs": trace_inputs},
                                 partial(quality.run, self))
            fp = self._run_stage("difficulty", {"upstream": fp, "config": c.difficulty.model_dump(),
                                                "inputs": [S.input_fingerprint(s.model_dump()) for s in c.difficulty.solvers]},
                                 partial(difficulty.run, self))
            dom = c.domains.model_dump()
            fp = self._run_stage("domains", {"upstream": fp, "config": dom,
                                             "inputs": S.file_fingerprint(msc_file(c.domains.msc_path))
                                             if c.domains.method != "field"
                                             and not c.domains.labels else None}, partial(domains.run, self))
            fp = self._run_stage("select", {"upstream": fp, "config": c.selection.model_dump()},
                                 partial(select.run, self))
            self._run_stage("export", {"upstream": fp, "config": c.export.model_dump(), "inputs": trace_inputs},
                            partial(export.run, self))
        finally:
            self._bar.close()
            self.shutdown()
        from s1ray.curation.report import write_report

        self.result.elapsed_s = round(time.perf_counter() - t0, 3)
        self.result.dataset_dir = str(self.store.dir("export"))
        self.result.final_rows = int((self.store.marker("export") or {}).get("stats", {}).get("rows", 0))
        self.result.report_dir = str(write_report(self.cfg, self.store, self.result))
        return self.result

def run_curation(cfg: CurationConfig) -> CurationResult:
    """Run ``cfg``; a relative ``output_dir`` resolves under ``$S1RAY_STORAGE`` (:mod:`s1ray.storage`)."""
    from s1ray.storage import announce, resolve_output

    cfg = cfg.model_copy(update={"output_dir": resolve_output(cfg.output_dir, "output_dir")})
    res = Pipeline(cfg).run()
    announce(f"curation {cfg.name}", cfg.output_dir)
    return res
