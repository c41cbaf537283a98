"""Stage outputs on disk: atomic, fingerprinted, resumable (pure: no Ray).

    <output_dir>/stages/<stage>/kept/*.parquet      rows that go on
                               rejects/*.parquet   rows dropped here, with `reason` and `detail`
                               _SUCCESS.json       the completion marker (below)
    <output_dir>/dataset/                           the export stage: the final dataset + marker

A stage writes everything into ``stages/.<stage>.tmp-<uuid>/`` and, last, its marker there;
then the directory is swapped in with ``os.replace``. A stage directory therefore either has a
marker and all of its files, or does not exist; a crash leaves only a ``.tmp-`` directory, which
the next run deletes. On object storage (``output_dir`` an ``s3://`` URI) the stage is written to
a local temporary directory on the driver and then uploaded, marker last (the old marker is
deleted first), so there too a stage counts as done only once all of its files are there. The
marker holds the stage's *fingerprint*: a SHA-256 of the stage's
config, its code version and the fingerprints of its inputs (the upstream stage's fingerprint,
trace/solver/eval files). A stage is skipped when its marker's fingerprint equals the one
computed now -- so changing one stage's config reruns that stage and the ones after it, and
nothing before it.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from s1ray.dataio import fingerprint, join_location, replace_dir  # noqa: F401  (fingerprint: the stages' marker key)
from s1ray.storage import Location, is_uri

MARKER = "_SUCCESS.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class StageStore:
    """``output_dir`` a local (or NFS) directory, or a URI; paths below it come back as ``Path``
    locally and as URI strings otherwise (both are what Ray Data and pyarrow readers take)."""

    def __init__(self, output_dir: str | Path):
        self.where = str(output_dir)
        self.remote = is_uri(self.where)
        self.root = self.where if self.remote else Path(output_dir)

    def _at(self, rel: str) -> str | Path:
        return join_location(self.root, rel)

    @property
    def stages(self) -> str | Path:
        return self._at("stages")

    def dir(self, stage: str) -> str | Path:
        # The final dataset sits at the top, where users look for it.
        return self._at("dataset" if stage == "export" else f"stages/{stage}")

    def kept(self, stage: str) -> str | Path:
        return join_location(self.dir(stage), "kept")

    def rejects(self, stage: str) -> str | Path:
        return join_location(self.dir(stage), "rejects")

    def marker(self, stage: str) -> dict[str, Any] | None:
        loc = Location(self.dir(stage))
        try:
            return json.loads(loc.read_text(MARKER)) if loc.exists(MARKER) else None
        except (OSError, json.JSONDecodeError):
            return None

    def is_done(self, stage: str, fp: str) -> bool:
        m = self.marker(stage)
        return m is not None and m.get("fingerprint") == fp

    def clean_temp(self) -> None:
        if self.remote:  # temporary directories are local ones, removed by commit/abort
            return
        for d in (Path(self.stages), self.root):
            if d.is_dir():
                for p in [*d.glob(".*.tmp-*"), *d.glob(".*.old-*")]:
                    shutil.rmtree(p, ignore_errors=True)

    def begin(self, stage: str) -> Path:
        if self.remote:
            return Path(tempfile.mkdtemp(prefix=f"s1ray-curation-{stage}-"))
        final = Path(self.dir(stage))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        return tmp

    def commit(self, stage: str, tmp: Path, fp: str, stats: dict[str, Any], config: Any = None,
               inputs: Any = None) -> dict[str, Any]:
        marker = {"stage": stage, "fingerprint": fp, "finished": _now(), "stats": stats,
                  "config": config, "inputs": inputs}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True, default=str) + "\n")
        try:
            replace_dir(tmp, self.dir(stage), last=(MARKER,))
        finally:
            if self.remote:  # a local temporary directory: nothing left to resume from it
                shutil.rmtree(tmp, ignore_errors=True)
        return marker

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
