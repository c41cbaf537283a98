"""Run the pipeline's stages in order, each resumable, with wall time recorded per stage.

A stage is done when ``<work_dir>/stages/<stage>.json`` exists with the same config hash; the
marker is written atomically after the stage returns. Sub-jobs resume on their own as well
(trace shards, curation stages, SFT checkpoints, evaluation samples), so an interrupted stage
picks up where it stopped.

``work_dir`` may be a URI (``s3://...``): every stage's outputs then go there (the stages'
loaders read models and datasets on S3 through local copies, :func:`s1ray.dataio.local_copy`),
and the stage logs are written locally and uploaded after each stage.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s1ray.console import captured, say, tail
from s1ray.dataio import (atomic_write, fingerprint, join_location, local_copy, replace_dir, write_json_atomic,
                          write_text_atomic)
from s1ray.pipeline.config import PipelineConfig
from s1ray.pipeline.report import stage_summary
from s1ray.storage import Location, announce, is_uri


class PipelineRunner:
    def __init__(self, cfg: PipelineConfig, echo: Callable[[str], None] = say):
        self.cfg = cfg
        self.echo = echo
        where = cfg.resolved_work_dir()
        self.remote = is_uri(where)
        self.work: str | Path = where if self.remote else Path(where).resolve()
        if not self.remote:
            self.work.mkdir(parents=True, exist_ok=True)
        self.summary: dict[str, Any] = {"name": cfg.name, "work_dir": str(self.work), "stages": {}}

    # -- paths wired between stages ----------------------------------------------------------
    def at(self, rel: str) -> str | Path:
        """``rel`` under the work dir: a Path locally, a URI string on object storage."""
        return join_location(self.work, rel)

    @property
    def logs_dir(self) -> Path:
        # Logs are written as they happen, so locally; on object storage they are uploaded per stage.
        return Path("runs", "logs", f"pipeline-{self.cfg.name}").resolve() if self.remote else self.work / "logs"

    @property
    def base_model_dir(self) -> str | Path:
        return self.at("base_model")

    @property
    def curated_path(self) -> str | Path:
        return self.at("curation/dataset/s1k.parquet")  # curation's export layout

    @property
    def heldout_path(self) -> str | Path:
        return self.at("heldout.jsonl")

    @property
    def candidates_path(self) -> str | Path:
        return self.at("curation/stages/dedupe/questions.parquet")  # curation's layout

    def curation_cfg(self, until: str | None = None):
        c = self.cfg.curation.model_copy(deep=True)
        c.output_dir = str(self.at("curation"))
        c.until = until
        # Trace and solver inputs may name the pipeline's own outputs as "{work_dir}/traces".
        for inp in [*c.quality.traces, *c.difficulty.solvers]:
            if isinstance(getattr(inp, "path", None), str):
                inp.path = inp.path.replace("{work_dir}", str(self.work))
        return c

    def traces_cfg(self, which: str):
        t = getattr(self.cfg, which).model_copy(deep=True)
        if "candidates" in self.cfg.stages:
            t.input.path = str(self.candidates_path)
        t.output_dir = str(self.at(which))
        return t

    def train_cfg(self):
        t = self.cfg.train.model_copy(deep=True)
        if "base_model" in self.cfg.stages:
            t.model = str(self.base_model_dir)
        if "curation" in self.cfg.stages:
            t.dataset.source = str(self.curated_path)
        t.storage_path = str(self.at("train"))
        t.export_dir = str(self.at("model"))
        return t

    def eval_cfg(self, model: str, tag: str):
        e = self.cfg.eval.model_copy(deep=True)
        if e.engine is not None:
            e.engine.model = model
        if "heldout" in self.cfg.stages:
            e.datasets = [d.model_copy(update={"path": str(self.heldout_path)}) if d.name == "heldout" else d
                          for d in e.datasets]
        e.name = tag
        e.output_dir = str(self.at(tag))
        return e

    # -- stages ------------------------------------------------------------------------------
    def _base_model(self) -> dict:
        from s1ray.tiny_model import TinyModelSpec, make_tiny_model

        b = self.cfg.base_model
        spec = TinyModelSpec(hidden_size=b.hidden_size, intermediate_size=2 * b.hidden_size,
                             num_hidden_layers=b.num_hidden_layers, num_attention_heads=b.hidden_size // 64,
                             num_key_value_heads=b.hidden_size // 64, max_position_embeddings=b.max_position_embeddings)
        if not self.remote:
            make_tiny_model(self.base_model_dir, seed=b.seed, spec=spec)
        else:  # made here, then uploaded whole
            import tempfile

            tmp = Path(tempfile.mkdtemp(prefix="s1ray-base-model-"))
            make_tiny_model(tmp, seed=b.seed, spec=spec)
            replace_dir(tmp, self.base_model_dir, last=("config.json",))
        return {"model": str(self.base_model_dir)}

    def _candidates(self) -> dict:
        """Curation up to dedupe/decontamination: the questions traces and solvers run on."""
        from s1ray.curation.pipeline import run_curation

        res = run_curation(self.curation_cfg(until="dedupe"))
        return {"questions": str(self.candidates_path), "executed": res.executed}

    def _traces(self) -> dict:
        from s1ray.traces.job import run_traces

        return _jsonable(run_traces(self.traces_cfg("traces")))

    def _solver(self) -> dict:
        from s1ray.traces.job import run_traces

        return _jsonable(run_traces(self.traces_cfg("solver")))

    def _curation(self) -> dict:
        from s1ray.curation.pipeline import run_curation

        res = run_curation(self.curation_cfg())
        return {"final_rows": res.final_rows, "eval_sets": res.eval_sets, "dataset_dir": res.dataset_dir, "report_dir": res.report_dir,
                "stages": {k: {kk: v.get(kk) for kk in ("rows_in", "rows_out") if kk in v} for k, v in res.stages.items()}}

    def _heldout(self) -> dict:
        """A seeded sample of the miniature's held-out problems (never in a training pool);
        checked against the curated set all the same."""
        import pyarrow.parquet as pq

        from s1ray.miniature.problems import heldout_problems

        h = self.cfg.heldout
        seen: set[str] = set()
        curated = str(self.curated_path)
        if Location(self.at("curation/dataset")).exists("s1k.parquet"):
            seen = set(pq.read_table(local_copy(curated), columns=["question"]).column("question").to_pylist())
        pool = [p for p in heldout_problems() if p.steps >= h.min_steps]
        if any(p.question in seen for p in pool):
            raise RuntimeError("heldout: a held-out problem is in the curated training set")
        rows = random.Random(h.seed).sample(pool, min(h.n, len(pool)))
        lines = (json.dumps({"id": p.id, "question": p.question, "answer": p.answer, "steps": p.steps,
                             "source": p.source}) + "\n" for p in rows)
        write_text_atomic(self.heldout_path, "".join(lines))
        return {"rows": len(rows), "excluded_curated": len(seen)}

    def _train(self) -> dict:
        from s1ray.train.trainer import run

        res = run(self.train_cfg())
        return {"export_dir": res.export_dir, "metrics": {k: v for k, v in res.metrics.items()
                                                         if isinstance(v, (int, float, str))},
                "data": res.data_stats}

    def _eval(self) -> dict:
        from s1ray.eval.sweep import run_sweep

        model = str(self.at("model")) if "train" in self.cfg.stages else self.cfg.eval.engine.model
        out = {"trained": _sweep_summary(run_sweep(self.eval_cfg(model, "eval")))}
        if self.cfg.eval_untrained:
            base = str(self.base_model_dir) if "base_model" in self.cfg.stages else self.cfg.train.model
            out["untrained"] = _sweep_summary(run_sweep(self.eval_cfg(base, "eval_untrained")))
        return out

    def _paper(self) -> dict:
        from s1ray.pipeline.paper import run_paper

        return run_paper(self)

    def _serve(self) -> dict:
        """Start the Serve app on the trained model, answer one request, shut it down."""
        import httpx
        from ray import serve

        from s1ray.serve.app import build_app

        s = self.cfg.serve.model_copy(deep=True)
        if "train" in self.cfg.stages:
            s.engine.model = str(self.at("model"))
        serve.start(http_options={"host": "127.0.0.1", "port": 8000})
        serve.run(build_app(s), name="s1ray", route_prefix="/")
        try:
            r = httpx.post("http://127.0.0.1:8000/v1/chat/completions", timeout=300, json={
                "model": s.model_name, "messages": [{"role": "user", "content": "Apply shift4 3 times to 1."}],
                "max_thinking_tokens": 64, "max_answer_tokens": 16})  # max_tokens would bound both together
            r.raise_for_status()
            msg = r.json()["choices"][0]["message"]
            return {"answer": msg["content"], "reasoning": msg["reasoning_content"]}
        finally:
            serve.shutdown()

    # -- driver ------------------------------------------------------------------------------
    def stage_config(self, stage: str) -> Any:
        section = getattr(self.cfg, "curation" if stage == "candidates" else stage, None)
        return section.model_dump() if section is not None else None

    def run(self) -> dict[str, Any]:
        import ray

        ray_was_up = ray.is_initialized()
        try:
            upstream = ""
            markers = Location(self.at("stages"))
            for stage in self.cfg.stages:
                marker = f"{stage}.json"
                # Chained: a stage reruns when its own config or any earlier stage changed.
                h = upstream = fingerprint({"stage": stage, "config": self.stage_config(stage), "upstream": upstream})[:16]
                done = json.loads(markers.read_text(marker)) if markers.exists(marker) else {}
                if done.get("hash") == h:
                    self.echo(f"[pipeline] {stage}: done earlier ({done['wall_s']:.1f} s), skipped")
                    self.summary["stages"][stage] = {**done, "skipped": True}
                    continue
                self._run_stage(stage, h, markers.uri(marker))
        finally:
            if not ray_was_up and ray.is_initialized():  # the stages started it: stop it while logging
                with captured(self.logs_dir / "ray_shutdown.log"):
                    ray.shutdown()
        write_json_atomic(self.at("summary.json"), self.summary, default=str)
        announce(f"pipeline {self.cfg.name}", str(self.work), self.echo)
        return self.summary

    def _run_stage(self, stage: str, h: str, marker: str) -> None:
        log = self.logs_dir / f"{stage}.log"
        self.echo(f"[pipeline] {stage}: running (log: {_shown(log)})")
        t = time.perf_counter()
        try:
            with captured(log):
                result = getattr(self, f"_{stage}")()
        except BaseException as exc:
            # The error itself is the caller's one line (s1ray's "failed: ..."): show what led to it.
            self.echo(f"[pipeline] {stage}: FAILED after {time.perf_counter() - t:.1f} s; the end of {_shown(log)}:")
            message = _one_line(exc)[:120]
            for line in [ln for ln in tail(log, 8) if not message or message not in ln][-5:]:
                self.echo(f"    | {line[:200]}")
            raise
        finally:
            if self.remote and log.is_file():  # beside the outputs, where the local disk may not last
                import shutil

                atomic_write(str(self.at(f"logs/{stage}.log")), lambda tmp: shutil.copyfile(log, tmp))
        wall = time.perf_counter() - t
        record = {"hash": h, "wall_s": wall, "result": result}
        write_json_atomic(marker, record, default=str)
        self.summary["stages"][stage] = record
        self.echo(f"[pipeline] {stage}: done in {wall:.1f} s -- {stage_summary(stage, result)}")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (shorter lines)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _jsonable(obj: Any) -> dict:
    from dataclasses import asdict, is_dataclass

    d = asdict(obj) if is_dataclass(obj) else dict(obj)
    return json.loads(json.dumps(d, default=str))


def _sweep_summary(res) -> dict:
    return {
        "output_dir": str(res.output_dir), "generated": res.generated, "failed": res.failed,
        "tokens_per_s": res.tokens_per_s, "points": res.point_rows, "methods": res.method_rows,
        "files": {k: str(v) for k, v in res.files.items()},
    }
