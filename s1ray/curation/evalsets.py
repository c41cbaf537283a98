"""The evaluation sets curation decontaminates against, resolved in the driver before Ray starts.

A set comes from (first match wins, as for evaluation, :mod:`s1ray.eval.data`): its ``path``,
``$S1RAY_DATA_DIR/<name>.jsonl``, its public HF hub id. ``kind: miniature_heldout`` is the
miniature's held-out problems, which is what a synthetic pool must not leak into. An
``optional`` set is used only where a local copy exists (``path`` or ``S1RAY_DATA_DIR``: a run
that must not wait on the network) and is otherwise listed as skipped. A required set that
none of the sources supplies is a :class:`~s1ray.config.ConfigError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from s1ray.config import ConfigError
from s1ray.curation.config import DecontamConfig, EvalSetConfig
from s1ray.dataio import DataError
from s1ray.eval.data import default_data_dir, resolve_rows

FIELD = "decontamination.eval_sets"


@dataclass
class EvalSets:
    questions: dict[str, list[str]] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)  # name -> where its questions came from
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why

    def fingerprint(self) -> str:
        """Identifies the questions themselves, wherever they were read from."""
        return hashlib.sha256(json.dumps(self.questions, sort_keys=True).encode()).hexdigest()

    def summary(self) -> dict[str, dict[str, str]]:
        return {"used": dict(self.used), "skipped": dict(self.skipped)}


def _local_copy(e: EvalSetConfig) -> bool:
    if e.path is not None:
        return Path(e.path).is_file()
    d = default_data_dir()
    return d is not None and (d / f"{e.name}.jsonl").is_file()


def _heldout_questions() -> list[str]:
    from s1ray.miniature.problems import heldout_problems

    return [p.question for p in heldout_problems()]


def resolve_eval_sets(cfg: DecontamConfig) -> EvalSets:
    """Every configured set's questions, or a ConfigError naming the first set that is missing."""
    out = EvalSets()
    if not cfg.enabled:
        out.skipped = {e.name: "decontamination is disabled" for e in cfg.eval_sets}
        return out
    for i, e in enumerate(cfg.eval_sets):
        where = f"{FIELD}[{i}]"
        if e.kind == "miniature_heldout":
            out.questions[e.name], out.used[e.name] = _heldout_questions(), "the miniature's held-out problems"
            continue
        if e.optional and not _local_copy(e):
            out.skipped[e.name] = (f"optional, and {e.path} does not exist" if e.path else
                                   "optional, no local copy in S1RAY_DATA_DIR")
            continue
        try:
            rows, origin, _ = resolve_rows(e.name, e.path, e.hf_name, e.hf_config, e.split, where=where)
        except DataError as exc:
            raise ConfigError(str(exc)) from None
        if rows and e.field not in rows[0]:
            raise ConfigError(f"{where}.field: eval set {e.name!r} ({origin}) has no column {e.field!r} "
                              f"(columns: {sorted(rows[0])})")
        out.questions[e.name] = [str(r.get(e.field) or "") for r in rows]
        out.used[e.name] = origin
    return out
