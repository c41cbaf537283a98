"""The sample log: one JSON object per finished generation in ``samples.jsonl`` (pure).

Durability: batches are appended with one ``write`` + ``flush`` + ``fsync``. A crash can leave
at most a torn last line; the reader skips lines that do not parse, and the writer first ends
a torn line with a newline so the next batch starts clean. A rerun reads the log and skips every
sample whose key is present.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SAMPLES_FILE = "samples.jsonl"  # the log's name in a sweep's output_dir
KEY_FIELDS = ("dataset", "id", "mode", "method", "budget", "sample")


def sample_key(rec: dict[str, Any]) -> tuple:
    """(dataset, question id, mode, method, budget label, sample index)."""
    return tuple(str(rec[k]) for k in KEY_FIELDS)


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record; torn or foreign lines are skipped. Later duplicates win."""
    p = Path(path)
    if not p.is_file():
        return []
    by_key: dict[tuple, dict[str, Any]] = {}
    with p.open(encoding="utf-8", errors="replace") as f:
        for line in f:
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
    """Appends batches of records durably."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.written = 0
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
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.written += len(recs)
        return len(recs)
