"""The curation pipeline on Ray Data: ingest -> dedupe -> quality -> difficulty -> domains ->
select -> export, each stage cached on disk (:mod:`s1ray.curation.store`).

How a stage runs: its input (the previous stage's ``kept`` parquet files, or the sources) is read
with Ray Data; the per-row work -- schema mapping, MinHash signatures and 8-gram lookups, regex
checks, grading solver samples, embeddings or LLM calls -- runs in ``map_batches`` tasks (the
decision functions are the pure ones of :mod:`~s1ray.curation.filters`); the driver streams the
annotated batches back and writes them, split into ``kept`` and ``rejects`` (every row once, with
its ``reason``), so the counts add up by construction.

Decisions that need every row -- which copy of a duplicate to keep, which trace sample to use,
the per-question solver verdict, the final sample -- are made on the driver over *compact*
columns only (ids, signatures, lengths, flags; never the question or trace text), then handed
back to the tasks as a broadcast object. Heavy trace text is never shuffled or joined: stages
carry only a trace's length and key, and the export stage fetches the text of the ~1,000
selected rows at the end.

Scale notes: the driver holds O(rows) compact state (a 512-byte signature per question in the
dedupe stage: ~50 MB per 100k questions) and writes the stage outputs; on a multi-node cluster
``output_dir`` and input files must be on storage every node sees (NFS, EFS, Lustre...).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from s1ray.curation import filters as F
from s1ray.curation import sources as S
from s1ray.curation.config import STAGES, CurationConfig
from s1ray.curation.store import StageStore, fingerprint

log = logging.getLogger("s1ray.curation")

# Bump a stage's version when its logic changes: cached outputs of the old logic are then redone.
STAGE_VERSIONS = {"ingest": 1, "dedupe": 1, "quality": 1, "difficulty": 1, "domains": 1, "select": 1, "export": 1}

_S, _I, _B = pa.string(), pa.int64(), pa.bool_()
Q_FIELDS = [("id", _S), ("source", _S), ("question", _S), ("solution", _S), ("answer", _S), ("metadata", _S),
            ("ingest_source", _S)]
STAGE_FIELDS = {
    "ingest": [],
    "dedupe": [],
    "quality": [("trusted", _B), ("trace_input", _I), ("trace_sample", _I), ("thinking_tokens", _I),
                ("teacher_answer", _S), ("teacher_correct", _B), ("teacher_model", _S)],
    "difficulty": [("solver_samples", _I), ("solver_correct", _I)],
    "domains": [("domain", _S)],
    "select": [("select_order", _I), ("selected_by", _S)],
}
REASON_FIELDS = [("reason", _S), ("detail", _S)]


def stage_schema(stage: str, with_reason: bool = False) -> pa.Schema:
    fields = list(Q_FIELDS)
    for s in STAGES:
        fields += STAGE_FIELDS.get(s, [])
        if s == stage:
            break
    return pa.schema(fields + (REASON_FIELDS if with_reason else []))


class CurationError(RuntimeError):
    """The pipeline failed; the message names the stage."""


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


# ------------------------------------------------------------------------------- task-side helpers
_BCAST: dict[str, Any] = {}


def _bcast(ref) -> Any:
    """A driver-side object (``ray.put``) inside a task; cached per worker process (last 2)."""
    import ray

    key = ref.hex()
    if key not in _BCAST:
        if len(_BCAST) >= 2:
            _BCAST.pop(next(iter(_BCAST)))
        _BCAST[key] = ray.get(ref)
    return _BCAST[key]


def _to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def _question_rows_batch(batch: pa.Table, src: dict, schema: pa.Schema) -> pa.Table:
    return _to_table(S.question_rows(batch.to_pylist(), src), schema)


def _trace_rows_batch(batch: pa.Table, fields: dict, input_index: int, id_prefix: str = "") -> pa.Table:
    return _to_table([S.trace_row(r, fields, input_index, id_prefix) for r in batch.to_pylist()], TRACE_SCHEMA)


def _solver_rows_batch(batch: pa.Table, solver: str, fields: dict) -> pa.Table:
    return _to_table([S.solver_row(r, solver, fields) for r in batch.to_pylist()], SOLVER_SCHEMA)


TRACE_SCHEMA = pa.schema([("id", _S), ("sample_index", _I), ("thinking", _S), ("attempt", _S), ("error", _S),
                          ("thinking_tokens", _I), ("finish_reason", _S), ("extracted_answer", _S),
                          ("teacher_model", _S), ("input_index", _I)])
SOLVER_SCHEMA = pa.schema([("solver", _S), ("id", _S), ("sample_index", _I), ("extracted_answer", _S), ("error", _S)])


# dedupe -----------------------------------------------------------------------
DEDUPE_FEATURES = pa.schema([("id", _S), ("source", _S), ("ingest_source", _S), ("exact_key", _S),
                             ("minhash", pa.binary()), ("contaminated", _S), ("contam_detail", _S)])


def _dedupe_features_batch(batch: pa.Table, cfg: dict, eval_ref) -> pa.Table:
    from s1ray.curation.text import MinHasher, exact_key

    index = _bcast(eval_ref) if eval_ref is not None else None
    hasher = MinHasher(cfg["num_perm"], cfg["seed"]) if cfg["near"] else None
    out = []
    for r in batch.select(["id", "source", "ingest_source", "question"]).to_pylist():
        q = r["question"] or ""
        hit = index.match(q) if index is not None else None
        out.append({"id": r["id"], "source": r["source"], "ingest_source": r["ingest_source"], "exact_key": exact_key(q),
                    "minhash": hasher.of_text(q, cfg["shingle"]).tobytes() if hasher else b"",
                    "contaminated": hit[0] if hit else None, "contam_detail": f"8-gram: {hit[1]!r}" if hit else None})
    return _to_table(out, DEDUPE_FEATURES)


def _mark_batch(batch: pa.Table, decisions_ref, schema: pa.Schema, extra_ref=None,
                extra_fields: tuple[str, ...] = ()) -> pa.Table:
    """Annotate rows with the driver's decisions: ``{id: (reason, detail)}`` and optional
    per-id extra columns ``{id: {col: value}}``."""
    decisions = _bcast(decisions_ref)
    extra = _bcast(extra_ref) if extra_ref is not None else {}
    rows = batch.to_pylist()
    for r in rows:
        d = decisions.get(r["id"])
        r["reason"], r["detail"] = (d[0], d[1]) if d else (None, None)
        for k, v in (extra.get(r["id"]) or {}).items():
            r[k] = v
    return _to_table(rows, schema)


# quality ----------------------------------------------------------------------
TRACE_FEATURES = pa.schema([("id", _S), ("input_index", _I), ("sample_index", _I), ("failure", _S), ("error", _S),
                            ("pattern", _S), ("pattern_field", _S), ("thinking_tokens", _I),
                            ("teacher_answer", _S), ("teacher_model", _S)])


def _token_counter(tokenizer: str | None) -> Callable[[str], int]:
    if not tokenizer:
        return F.approx_tokens
    # The trace job's counter: one tokenizer load per process, the same counting rule.
    from s1ray.traces.records import token_counter

    return token_counter(tokenizer)


def _trace_features_batch(batch: pa.Table, patterns: list[dict], drop_truncated: bool, drop_empty_attempt: bool,
                          tokenizer: str | None) -> pa.Table:
    from s1ray.answers import extract_answer

    pats = F.compile_patterns(patterns)
    count = _token_counter(tokenizer)
    out = []
    for t in batch.to_pylist():
        failure = F.trace_failure(t, drop_truncated=drop_truncated, drop_empty_attempt=drop_empty_attempt)
        pat = None if failure else F.pattern_reason({"thinking": t["thinking"], "attempt": t["attempt"]}, pats)
        tokens = t["thinking_tokens"]
        if tokens is None and not failure:
            tokens = count(t["thinking"] or "")
        ans = t["extracted_answer"]
        if ans is None and not failure:
            att = (t["attempt"] or "").strip()
            ans = extract_answer(att) or (att if len(att) <= 64 else None)
        out.append({"id": t["id"], "input_index": t["input_index"], "sample_index": t["sample_index"],
                    "failure": failure, "error": (t["error"] or "")[:200] or None,
                    "pattern": pat[0] if pat else None, "pattern_field": pat[1] if pat else None,
                    "thinking_tokens": tokens, "teacher_answer": ans, "teacher_model": t["teacher_model"]})
    return _to_table(out, TRACE_FEATURES)


def _quality_batch(batch: pa.Table, best_ref, patterns: list[dict], trusted: list[dict], schema: pa.Schema) -> pa.Table:
    from s1ray.answers import is_equivalent

    best = _bcast(best_ref)
    pats = F.compile_patterns(patterns)
    rows = batch.to_pylist()
    for r in rows:
        t = best.get(r["id"])
        r.update(trusted=False, reason=None, detail=None)
        if t is None:
            r["reason"] = "no_trace"
            continue
        r.update(trace_input=t["input_index"], trace_sample=t["sample_index"], thinking_tokens=t["thinking_tokens"],
                 teacher_answer=t["teacher_answer"], teacher_model=t["teacher_model"])
        if t["failure"]:
            r["reason"], r["detail"] = t["failure"], t["error"]
            continue
        correct = None
        if r["answer"] is not None and t["teacher_answer"] is not None:
            correct = is_equivalent(t["teacher_answer"], r["answer"])
        r["teacher_correct"] = correct
        if F.trusted_rule_matches(r["source"], trusted, correct, t["thinking_tokens"]):
            r["trusted"] = True
            continue
        hit = F.pattern_reason({"question": r["question"], "solution": r["solution"]}, pats)
        if hit:
            r["reason"], r["detail"] = hit[0], f"in {hit[1]}"
        elif t["pattern"]:
            r["reason"], r["detail"] = t["pattern"], f"in {t['pattern_field']}"
    return _to_table(rows, schema)


# difficulty -------------------------------------------------------------------
GRADE_SCHEMA = pa.schema([("solver", _S), ("id", _S), ("correct", _B), ("judged", _B), ("judge_error", _S)])


def _grade_batch(batch: pa.Table, refs_ref, judge: dict | None) -> pa.Table:
    from s1ray.answers import is_equivalent

    refs = _bcast(refs_ref)
    out, ask = [], []
    for r in batch.to_pylist():
        ref = refs.get(r["id"])
        if ref is None:
            continue  # not a question of this stage (dropped earlier, or another pool's)
        g = {"solver": r["solver"], "id": r["id"], "correct": None, "judged": False, "judge_error": None}
        if ref["answer"] is None or (r["error"] and r["extracted_answer"] is None):
            out.append(g)  # ungradable: no reference, or the sample failed
            continue
        pred = r["extracted_answer"]
        g["correct"] = bool(pred is not None and is_equivalent(pred, ref["answer"]))
        if judge and pred is not None and (judge.get("mode") == "always" or not g["correct"]):
            ask.append((g, ref, pred))
        out.append(g)
    if ask:
        from s1ray.curation.llm import ChatClient, LLMError, judge_messages, map_concurrent, parse_judge

        with ChatClient(judge) as client:
            def one(item):
                g, ref, pred = item
                try:
                    reply = client.chat(judge_messages(ref["question"], ref["solution"] or ref["answer"], pred))
                except LLMError as exc:
                    g["judge_error"] = str(exc)[:200]
                    return
                verdict = parse_judge(reply)
                if verdict is None:
                    g["judge_error"] = f"unparsed reply: {reply[:100]!r}"
                else:
                    g["correct"], g["judged"] = verdict, True

            map_concurrent(one, ask, int(judge.get("max_concurrency", 8)))
    return _to_table(out, GRADE_SCHEMA)


# domains ----------------------------------------------------------------------
def _domain_rows(rows: list[dict], classifier) -> list[dict]:
    labels = classifier.classify(rows)
    for r, d in zip(rows, labels):
        r["domain"], r["reason"], r["detail"] = d, None, None
    return rows


def _domain_batch(batch: pa.Table, cfg: dict, schema: pa.Schema) -> pa.Table:
    from s1ray.curation.domains import make_classifier

    return _to_table(_domain_rows(batch.to_pylist(), make_classifier(cfg)), schema)


class _EmbeddingDomains:
    """Ray Data actor: loads the embedding model once."""

    def __init__(self, cfg: dict, schema: pa.Schema):
        from s1ray.curation.domains import make_classifier

        self.classifier = make_classifier(cfg)
        self.schema = schema

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _to_table(_domain_rows(batch.to_pylist(), self.classifier), self.schema)


# export -----------------------------------------------------------------------
def _pick_traces_batch(batch: pa.Table, keys_ref) -> pa.Table:
    keys = _bcast(keys_ref)
    rows = [t for t in batch.to_pylist() if (t["id"], t["input_index"], t["sample_index"]) in keys]
    return _to_table(rows, TRACE_SCHEMA)


def _questions_file(kept: Path, out: Path) -> None:
    """The candidates in the question schema, one file: the input of the trace and solver jobs."""
    cols = [n for n, _ in Q_FIELDS if n != "ingest_source"]
    with pq.ParquetWriter(out, pa.schema([f for f in Q_FIELDS if f[0] != "ingest_source"])) as w:
        for f in sorted(kept.glob("*.parquet")):
            w.write_table(pq.read_table(f, columns=cols))


# ------------------------------------------------------------------------------- the driver side
def _load_hf(spec, **load_kwargs):
    """An HF dataset from a ``save_to_disk`` directory or the hub (``spec``: path, config, split,
    revision), as one split."""
    from s1ray.dataio import DataError, load_hf

    try:
        return load_hf(spec.path, split=spec.split, config=spec.config, revision=spec.revision, **load_kwargs)
    except DataError as exc:
        raise CurationError(str(exc)) from None


class _Writer:
    """Streams annotated batches into ``kept/`` and ``rejects/`` parquet files (new file every
    ``rows_per_file`` rows, so the next stage reads them with that many parallel tasks)."""

    def __init__(self, tmp: Path, kept_schema: pa.Schema, reject_schema: pa.Schema, rows_per_file: int):
        self.dirs = {"kept": tmp / "kept", "rejects": tmp / "rejects"}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.schemas = {"kept": kept_schema, "rejects": reject_schema}
        self.rows_per_file = rows_per_file
        self.writers: dict[str, pq.ParquetWriter | None] = {"kept": None, "rejects": None}
        self.in_file = {"kept": 0, "rejects": 0}
        self.files = {"kept": 0, "rejects": 0}
        self.reasons: Counter = Counter()
        self.rows_in = 0
        self.rows_out = 0

    def _write(self, which: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        w = self.writers[which]
        if w is None or self.in_file[which] >= self.rows_per_file:
            if w is not None:
                w.close()
            path = self.dirs[which] / f"part-{self.files[which]:05d}.parquet"
            self.files[which] += 1
            w = self.writers[which] = pq.ParquetWriter(path, self.schemas[which])
            self.in_file[which] = 0
        w.write_table(table.select(self.schemas[which].names).cast(self.schemas[which]))
        self.in_file[which] += table.num_rows

    def add(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        self.rows_in += table.num_rows
        reason = table.column("reason")
        kept_mask = pc.is_null(reason)
        kept = table.filter(kept_mask)
        rej = table.filter(pc.invert(kept_mask))
        self.rows_out += kept.num_rows
        if rej.num_rows:
            self.reasons.update(rej.column("reason").to_pylist())
        self._write("kept", kept)
        self._write("rejects", rej)

    def close(self) -> dict[str, Any]:
        for which, w in self.writers.items():
            if w is not None:
                w.close()
            else:  # an empty side still gets a (0-row) file so readers see its schema
                pq.write_table(self.schemas[which].empty_table(), self.dirs[which] / "part-00000.parquet")
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "rejected": dict(sorted(self.reasons.items()))}


class Pipeline:
    def __init__(self, cfg: CurationConfig):
        self.cfg = cfg
        self.store = StageStore(cfg.output_dir)
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
            kw: dict[str, Any] = {"log_to_driver": True}
            if self.cfg.ray.address:
                kw["address"] = self.cfg.ray.address
            elif not os.environ.get("RAY_ADDRESS"):
                kw["include_dashboard"] = False
                if self.cfg.ray.num_cpus:
                    kw["num_cpus"] = self.cfg.ray.num_cpus
                if self.cfg.ray.object_store_memory_mb:
                    kw["object_store_memory"] = self.cfg.ray.object_store_memory_mb * 1024**2
            ray.init(**kw)
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

    def _map(self, ds, fn, **kw):
        return ds.map_batches(fn, batch_format="pyarrow", batch_size=self.cfg.batch_size,
                              num_cpus=self.cfg.map_num_cpus, **kw)

    def _read_kept(self, stage: str):
        import ray.data

        return ray.data.read_parquet(str(self.store.kept(stage)))

    def _blocks(self, n: int) -> int:
        return max(1, min(64, math.ceil(n / self.cfg.batch_size)))

    def _from_rows(self, rows: list[dict], schema: pa.Schema):
        import ray.data

        table = _to_table(rows, schema)
        k = self._blocks(len(rows))
        step = max(1, math.ceil(len(rows) / k))
        return ray.data.from_arrow([table.slice(i, step) for i in range(0, max(len(rows), 1), step)])

    @property
    def rows_per_file(self) -> int:
        return self.cfg.batch_size * 4

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
                                 self._ingest)
            fp = self._run_stage("dedupe", {"upstream": fp, "config": {"dedupe": c.dedupe.model_dump(),
                                            "decontamination": c.decontamination.model_dump(), "trusted": trusted_sources,
                                            "source_order": [s.name for s in c.sources]},
                                            "inputs": self.eval_sets.fingerprint()},
                                 self._dedupe)
            trace_inputs = [S.input_fingerprint(t.model_dump()) | {"spec": t.model_dump()} for t in c.quality.traces]
            fp = self._run_stage("quality", {"upstream": fp, "config": c.quality.model_dump(), "inputs": trace_inputs},
                                 self._quality)
            fp = self._run_stage("difficulty", {"upstream": fp, "config": c.difficulty.model_dump(),
                                                "inputs": [S.input_fingerprint(s.model_dump()) for s in c.difficulty.solvers]},
                                 self._difficulty)
            dom = c.domains.model_dump()
            fp = self._run_stage("domains", {"upstream": fp, "config": dom,
                                             "inputs": S.file_fingerprint(msc_file(c.domains.msc_path))
                                             if c.domains.method != "field"
                                             and not c.domains.labels else None}, self._domains)
            fp = self._run_stage("select", {"upstream": fp, "config": c.selection.model_dump()}, self._select)
            self._run_stage("export", {"upstream": fp, "config": c.export.model_dump(), "inputs": trace_inputs},
                            self._export)
        finally:
            self._bar.close()
            self.shutdown()
        from s1ray.curation.report import write_report

        self.result.elapsed_s = round(time.perf_counter() - t0, 3)
        self.result.dataset_dir = str(self.store.dir("export"))
        self.result.final_rows = int((self.store.marker("export") or {}).get("stats", {}).get("rows", 0))
        self.result.report_dir = str(write_report(self.cfg, self.store, self.result))
        return self.result

    # -- stages -------------------------------------------------------------------------------
    def _source_dataset(self, src) -> Any:
        import ray.data

        d = src.model_dump()
        if src.kind == "miniature":
            recs = S.miniature_records(src.n, src.seed, src.max_steps)
            if src.limit:
                recs = recs[: src.limit]
            for r in recs:
                r["metadata"] = json.dumps(r["metadata"])
            return ray.data.from_items(recs, override_num_blocks=self._blocks(len(recs)))
        if src.kind == "hf":
            hf = _load_hf(src, data_files=src.data_files)
            if src.filter:
                flt = d["filter"]
                hf = hf.filter(lambda r: S.record_matches(r, flt))
            if src.limit:
                hf = hf.select(range(min(src.limit, len(hf))))
            return ray.data.from_huggingface(hf)
        paths = [str(p) for p in S.expand_paths(src.path)]
        if not paths:
            raise FileNotFoundError(f"source {src.name}: no files at {src.path!r}")
        ds = ray.data.read_json(paths, lines=True) if src.kind == "jsonl" else ray.data.read_parquet(paths)
        return ds.limit(src.limit) if src.limit else ds

    def _ingest(self, tmp: Path) -> dict[str, Any]:
        schema = stage_schema("ingest", with_reason=True)
        w = _Writer(tmp, stage_schema("ingest"), schema, self.rows_per_file)
        seen: set[str] = set()
        per_source: dict[str, int] = {}
        for src in self.cfg.sources:
            ds = self._map(self._source_dataset(src), _question_rows_batch,
                           fn_kwargs={"src": src.model_dump(), "schema": schema})
            n = 0
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
                rows = batch.to_pylist()
                for r in rows:  # ids are unique over the whole pool; the first (source order) wins
                    if r["reason"] is None:
                        if r["id"] in seen:
                            r["reason"], r["detail"] = "duplicate_id", "an earlier row has this id (set id_prefix?)"
                        else:
                            seen.add(r["id"])
                n += len(rows)
                w.add(_to_table(rows, schema))
            per_source[src.name] = n
        return {**w.close(), "per_source": per_source}

    def _dedupe(self, tmp: Path) -> dict[str, Any]:
        import ray

        c = self.cfg
        eval_ref = None
        eval_sizes: dict = {}
        boilerplate: list = []
        if self.eval_sets.questions:
            index = F.EvalIndex(self.eval_sets.questions, c.decontamination.ngram, c.decontamination.short_exact,
                                c.decontamination.boilerplate_df)
            eval_sizes, boilerplate = index.sizes, index.boilerplate[:50]
            eval_ref = ray.put(index)
        dcfg = c.dedupe.model_dump()
        feats = self._map(self._read_kept("ingest"), _dedupe_features_batch, fn_kwargs={"cfg": dcfg, "eval_ref": eval_ref})
        rows = []
        for b in feats.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
            rows.extend(b.to_pylist())
        decisions = F.dedupe_decisions(
            rows, exact=c.dedupe.exact, near=c.dedupe.near, bands=c.dedupe.bands, threshold=c.dedupe.threshold,
            source_order={s.name: i for i, s in enumerate(c.sources)}, trusted=[r.source for r in c.quality.trusted])
        del rows
        out = self._mark_and_write("ingest", "dedupe", tmp, decisions)
        _questions_file(tmp / "kept", tmp / "questions.parquet")
        return {**out, "eval_sets": eval_sizes, "boilerplate_ngrams": boilerplate}

    def _mark_and_write(self, upstream: str, stage: str, tmp: Path, decisions: dict, extra: dict | None = None) -> dict:
        import ray

        schema = stage_schema(stage, with_reason=True)
        ds = self._map(self._read_kept(upstream), _mark_batch,
                       fn_kwargs={"decisions_ref": ray.put(decisions), "schema": schema,
                                  "extra_ref": ray.put(extra) if extra is not None else None})
        w = _Writer(tmp, stage_schema(stage), schema, self.rows_per_file)
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
            w.add(b)
        return w.close()

    def _hf_dataset(self, spec):
        import ray.data

        return ray.data.from_huggingface(_load_hf(spec))

    def _trace_dataset(self, spec, index: int):
        import ray.data

        if spec.kind == "miniature_teacher":
            rows = S.miniature_traces(spec.n, spec.seed, spec.max_steps, spec.fail_every, input_index=index)
            return self._from_rows(rows, TRACE_SCHEMA)
        if spec.kind == "hf":
            return self._map(self._hf_dataset(spec), _trace_rows_batch,
                             fn_kwargs={"fields": spec.fields, "input_index": index, "id_prefix": spec.id_prefix})
        if spec.kind == "traces_dir":
            files = [str(f) for f in S.traces_dir_files(spec.path)]
            fields: dict = {}
        else:
            files = [str(f) for f in S.expand_paths(spec.path)]
            fields = spec.fields
        if not files:
            raise FileNotFoundError(f"traces at {spec.path}: no (completed) files")
        if all(f.endswith(".parquet") for f in files):
            ds = ray.data.read_parquet(files)
        else:
            ds = ray.data.read_json(files, lines=True)
        return self._map(ds, _trace_rows_batch, fn_kwargs={"fields": fields, "input_index": index})

    def _quality(self, tmp: Path) -> dict[str, Any]:
        import ray

        q = self.cfg.quality
        pats = [p.model_dump() for p in q.patterns]
        trace_pats = [{**p, "fields": [f for f in p["fields"] if f in ("thinking", "attempt")]} for p in pats]
        question_pats = [{**p, "fields": [f for f in p["fields"] if f in ("question", "solution")]} for p in pats]
        samples: dict[str, list[dict]] = defaultdict(list)
        n_traces = 0
        failures: Counter = Counter()
        for i, spec in enumerate(q.traces):
            ds = self._map(self._trace_dataset(spec, i), _trace_features_batch,
                           fn_kwargs={"patterns": trace_pats, "drop_truncated": q.drop_truncated,
                                      "drop_empty_attempt": q.drop_empty_attempt, "tokenizer": q.length.tokenizer})
            for b in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
                for t in b.to_pylist():
                    samples[t["id"]].append(t)
                    n_traces += 1
                    failures[t["failure"] or t["pattern"] or "ok"] += 1
        best = {k: F.best_trace(v) for k, v in samples.items()}
        del samples
        schema = stage_schema("quality", with_reason=True)
        ds = self._map(self._read_kept("dedupe"), _quality_batch,
                       fn_kwargs={"best_ref": ray.put(best), "patterns": question_pats,
                                  "trusted": [r.model_dump() for r in q.trusted], "schema": schema})
        w = _Writer(tmp, stage_schema("quality"), schema, self.rows_per_file)
        trusted = 0
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
            w.add(b)
            import pyarrow.compute as pc

            trusted += int(pc.sum(pc.and_(b.column("trusted"), pc.is_null(b.column("reason")))).as_py() or 0)
        return {**w.close(), "trace_rows": n_traces, "trace_samples": dict(sorted(failures.items())), "trusted": trusted,
                "thinking_tokens_method": f"tokenizer:{q.length.tokenizer}" if q.length.tokenizer
                else "trace rows' own count, else words+symbols"}

    def _solver_dataset(self, spec):
        import ray.data

        if spec.kind == "miniature_weak_solver":
            rows = S.miniature_solver(spec.n, spec.seed, spec.max_steps, spec.name)
            return self._from_rows(rows, SOLVER_SCHEMA)
        if spec.kind == "traces_dir":
            files, fields = [str(f) for f in S.traces_dir_files(spec.path)], {}
        else:
            files, fields = [str(f) for f in S.expand_paths(spec.path)], spec.fields
        if not files:
            raise FileNotFoundError(f"solver {spec.name}: no (completed) files at {spec.path}")
        ds = ray.data.read_parquet(files) if all(f.endswith(".parquet") for f in files) else ray.data.read_json(files, lines=True)
        return self._map(ds, _solver_rows_batch, fn_kwargs={"solver": spec.name, "fields": fields})

    def _difficulty(self, tmp: Path) -> dict[str, Any]:
        import ray

        d = self.cfg.difficulty
        if not d.enabled or not d.solvers:
            return {**self._mark_and_write("quality", "difficulty", tmp, {}), "solvers": {}}
        refs = {}
        for b in self._read_kept("quality").select_columns(["id", "question", "answer", "solution"]).iter_batches(
                batch_format="pyarrow", batch_size=self.cfg.batch_size):
            for r in b.to_pylist():
                refs[r["id"]] = {"answer": r["answer"], "question": r["question"], "solution": r["solution"]}
        refs_ref = ray.put(refs)
        judge = d.judge.model_dump() if d.judge else None
        graded = []
        per_solver: dict[str, Counter] = defaultdict(Counter)
        for spec in d.solvers:
            ds = self._map(self._solver_dataset(spec), _grade_batch, fn_kwargs={"refs_ref": refs_ref, "judge": judge})
            for b in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
                for g in b.to_pylist():
                    graded.append(g)
                    st = per_solver[g["solver"]]
                    st["samples"] += 1
                    st["correct"] += int(bool(g["correct"]))
                    st["ungraded"] += int(g["correct"] is None)
                    st["judged"] += int(bool(g["judged"]))
                    st["judge_errors"] += int(g["judge_error"] is not None)
        stats = F.aggregate_grades(graded)
        del graded
        names = [s.name for s in d.solvers]
        trusted_ids = set()
        for b in self._read_kept("quality").select_columns(["id", "trusted"]).iter_batches(batch_format="pyarrow"):
            trusted_ids.update(r["id"] for r in b.to_pylist() if r["trusted"])
        decisions, extra = {}, {}
        for qid, ref in refs.items():
            st = stats.get(qid, {})
            reason = F.difficulty_reason(st, names, has_reference=ref["answer"] is not None, trusted=qid in trusted_ids,
                                         on_missing=d.on_missing, on_no_reference=d.on_no_reference)
            if reason:
                decisions[qid] = reason
            extra[qid] = {"solver_samples": sum(s["samples"] for s in st.values()),
                          "solver_correct": sum(s["correct"] for s in st.values())}
        out = self._mark_and_write("quality", "difficulty", tmp, decisions, extra)
        return {**out, "solvers": {k: dict(v) for k, v in per_solver.items()}}

    def _domains(self, tmp: Path) -> dict[str, Any]:
        from ray.data import ActorPoolStrategy

        cfg = self.cfg.domains.model_dump()
        schema = stage_schema("domains", with_reason=True)
        ds = self._read_kept("difficulty")
        if self.cfg.domains.method == "embedding":
            e = self.cfg.domains.embedding
            ds = ds.map_batches(_EmbeddingDomains, batch_format="pyarrow", batch_size=e.batch_size,
                                fn_constructor_kwargs={"cfg": cfg, "schema": schema},
                                compute=ActorPoolStrategy(size=e.actors), num_cpus=e.num_cpus)
        else:
            ds = self._map(ds, _domain_batch, fn_kwargs={"cfg": cfg, "schema": schema})
        w = _Writer(tmp, stage_schema("domains"), schema, self.rows_per_file)
        hist: Counter = Counter()
        for b in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
            hist.update(b.column("domain").to_pylist())
            w.add(b)
        return {**w.close(), "method": self.cfg.domains.method, "domains": dict(hist.most_common())}

    def _select(self, tmp: Path) -> dict[str, Any]:
        from s1ray.curation.selection import Candidate, select

        s = self.cfg.selection
        cands = []
        for b in self._read_kept("domains").select_columns(["id", "domain", "thinking_tokens", "trusted"]).iter_batches(
                batch_format="pyarrow", batch_size=self.cfg.batch_size):
            cands.extend(Candidate(r["id"], r["domain"] or "", int(r["thinking_tokens"] or 0), bool(r["trusted"]))
                         for r in b.to_pylist())
        picks = select(cands, s.size, s.seed, s.method, s.include_trusted, s.rank_base)
        chosen = {p.id: p for p in picks}
        decisions = {c.id: ("not_selected", s.method) for c in cands if c.id not in chosen}
        extra = {p.id: {"select_order": p.order, "selected_by": p.how} for p in picks}
        out = self._mark_and_write("domains", "select", tmp, decisions, extra)
        if len(picks) < s.size:
            log.warning("curation: select: only %d candidates for size %d", len(picks), s.size)
        return {**out, "method": s.method, "size": s.size, "seed": s.seed, "selected": len(picks),
                "trusted": sum(p.how == "trusted" for p in picks)}

    def _export(self, tmp: Path) -> dict[str, Any]:
        import ray

        rows = []
        for b in self._read_kept("select").iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
            rows.extend(b.to_pylist())
        rows.sort(key=lambda r: r["select_order"])
        keys = {(r["id"], r["trace_input"], r["trace_sample"]) for r in rows}
        keys_ref = ray.put(keys)
        texts: dict[tuple, dict] = {}
        for i, spec in enumerate(self.cfg.quality.traces):
            ds = self._map(self._trace_dataset(spec, i), _pick_traces_batch, fn_kwargs={"keys_ref": keys_ref})
            for b in ds.iter_batches(batch_format="pyarrow", batch_size=self.cfg.batch_size):
                for t in b.to_pylist():
                    texts.setdefault((t["id"], t["input_index"], t["sample_index"]), t)
        missing = [k for k in keys if k not in texts]
        if missing:
            raise CurationError(f"export: traces of {len(missing)} selected rows vanished (e.g. {missing[:3]}); "
                                "did the trace inputs change?")
        from s1ray.curation.export import s1k_rows, write_dataset

        out = s1k_rows(rows, texts)
        files = write_dataset(out, tmp, self.cfg.export.model_dump())
        return {"rows_in": len(rows), "rows_out": len(out), "rejected": {}, "rows": len(out), "files": files}


def run_curation(cfg: CurationConfig) -> CurationResult:
    """Run ``cfg``; a relative ``output_dir`` resolves under ``$S1RAY_STORAGE`` (:mod:`s1ray.storage`)."""
    from s1ray.storage import announce, resolve_output

    cfg = cfg.model_copy(update={"output_dir": resolve_output(cfg.output_dir, "output_dir")})
    res = Pipeline(cfg).run()
    announce(f"curation {cfg.name}", cfg.output_dir)
    return res
