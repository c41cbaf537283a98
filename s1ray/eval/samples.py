"""The sample log: one JSON object per finished generation, kept in a sweep's output directory.

A local (or NFS) directory holds one file, ``samples.jsonl``. Batches are appended with one
``write`` + ``flush`` + ``fsync``; a crash can leave at most a torn last line, which the reader
skips, and the writer first ends a torn line with a newline so the next batch starts clean.

Object storage (``s3://...``) has no append, so there each batch is one more object,
``samples/part-<run>-<seq>.jsonl``, uploaded whole (a reader never sees half of one). The part
names sort in the order they were written, so "later duplicates win" holds across runs too.

A rerun reads the log and skips every sample whose key is present.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from s1ray.storage import Location

SAMPLES_FILE = "samples.jsonl"  # the log's name in a sweep's output_dir
PARTS_DIR = "samples"  # on object storage: one object per appended batch
KEY_FIELDS = ("dataset", "id", "mode", "method", "budget", "sample")


def sample_key(rec: dict[str, Any]) -> tuple:
    """(dataset, question id, mode, method, budget label, sample index)."""
    return tuple(str(rec[k]) for k in KEY_FIELDS)


def _as_location(where: str | Path | Location) -> Location:
    return where if isinstance(where, Location) else Location(where)


def _log_texts(loc: Location) -> Iterable[str]:
    if loc.exists(SAMPLES_FILE):
        yield loc.read_bytes(SAMPLES_FILE).decode("utf-8", errors="replace")
    if not loc.local:
        parts = Location(loc.uri(PARTS_DIR))
        for name in parts.names():
            if name.endswith(".jsonl"):
                yield parts.read_bytes(name).decode("utf-8", errors="replace")


def read_samples(out_dir: str | Path | Location) -> list[dict[str, Any]]:
    """Every complete record in the log of the sweep directory ``out_dir`` (none when there is no
    log yet); torn or foreign lines are skipped. Later duplicates win."""
    by_key: dict[tuple, dict[str, Any]] = {}
    for text in _log_texts(_as_location(out_dir)):
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                by_key[sample_key(rec)] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return list(by_key.values())


class SampleWriter:
    """Appends batches of records durably to the log of the sweep directory ``out_dir``."""

    def __init__(self, out_dir: str | Path | Location):
        self.loc = _as_location(out_dir)
        self.loc.makedirs()
        self.written = 0
        # Sortable and unique per writer: a later run's parts sort after an earlier run's.
        self._run = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._parts = 0
        if self.loc.local:
            self.path = Path(self.loc.path(SAMPLES_FILE))
            self._repair_tail()

    def _repair_tail(self) -> None:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
        if last != b"\n":
            with self.path.open("ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        recs = list(records)
        if not recs:
            return 0
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8")
        if self.loc.local:
            with self.path.open("ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            self._parts += 1
            self.loc.write_bytes(f"{PARTS_DIR}/part-{self._run}-{self._parts:06d}.jsonl", data)
        self.written += len(recs)
        return len(recs)
