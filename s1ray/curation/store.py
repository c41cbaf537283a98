"""Stage outputs on disk: atomic, fingerprinted, resumable (pure: no Ray).

    <output_dir>/stages/<stage>/kept/*.parquet      rows that go on
                               rejects/*.parquet   rows dropped here, with `reason` and `detail`
                               _SUCCESS.json       the completion marker (below)
    <output_dir>/dataset/                           the export stage: the final dataset + marker

A stage writes everything into ``stages/.<stage>.tmp-<uuid>/`` and, last, its marker there;
then the directory is swapped in with ``os.replace``. A stage directory therefore either has a
marker and all of its files, or does not exist; a crash leaves only a ``.tmp-`` directory, which
the next run deletes. The marker holds the stage's *fingerprint*: a SHA-256 of the stage's
config, its code version and the fingerprints of its inputs (the upstream stage's fingerprint,
trace/solver/eval files). A stage is skipped when its marker's fingerprint equals the one
computed now -- so changing one stage's config reruns that stage and the ones after it, and
nothing before it.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from s1ray.dataio import fingerprint, replace_dir  # noqa: F401  (fingerprint: the stages' marker key)

MARKER = "_SUCCESS.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class StageStore:
    def __init__(self, output_dir: str | Path):
        self.root = Path(output_dir)
        self.stages = self.root / "stages"

    def dir(self, stage: str) -> Path:
        # The final dataset sits at the top, where users look for it.
        return self.root / "dataset" if stage == "export" else self.stages / stage

    def kept(self, stage: str) -> Path:
        return self.dir(stage) / "kept"

    def rejects(self, stage: str) -> Path:
        return self.dir(stage) / "rejects"

    def marker(self, stage: str) -> dict[str, Any] | None:
        p = self.dir(stage) / MARKER
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_done(self, stage: str, fp: str) -> bool:
        m = self.marker(stage)
        return m is not None and m.get("fingerprint") == fp

    def clean_temp(self) -> None:
        for d in (self.stages, self.root):
            if d.is_dir():
                for p in [*d.glob(".*.tmp-*"), *d.glob(".*.old-*")]:
                    shutil.rmtree(p, ignore_errors=True)

    def begin(self, stage: str) -> Path:
        parent = self.dir(stage).parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{self.dir(stage).name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        return tmp

    def commit(self, stage: str, tmp: Path, fp: str, stats: dict[str, Any], config: Any = None,
               inputs: Any = None) -> dict[str, Any]:
        marker = {"stage": stage, "fingerprint": fp, "finished": _now(), "stats": stats,
                  "config": config, "inputs": inputs}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True, default=str) + "\n")
        replace_dir(tmp, self.dir(stage))
        return marker

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
