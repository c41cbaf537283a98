"""Sharded, resumable output: ``<output_dir>/shard-NNNNN.{parquet,jsonl}`` + ``manifest.json``.

* ``output_dir`` is a local path or an ``s3://`` URI (:class:`s1ray.storage.Location`). A shard
  is written to a temporary file in the same directory and ``os.replace``-d into place (on S3: one
  PUT, objects appear whole), so no reader ever sees half a shard.
* A shard is *done* only once ``manifest.json`` lists it; the manifest is itself replaced
  atomically after each shard. A crash between the two leaves an unlisted shard file, which
  is ignored (and overwritten by the next run's shard of that number).
* A rerun reads the ``(id, sample_index)`` keys of the listed shards and generates only the
  rest; :func:`read_traces` returns the rows of the listed shards.
* With ``retry_errors`` a rerun also regenerates the keys whose row holds an ``error``; the new
  row goes into a new shard and *supersedes* the old one (the later shard wins), so
  :func:`read_traces` still returns every key exactly once and old shards are never rewritten.
* The manifest records the generation fingerprint (teacher, prompt, sampling, format, student
  tokenizer); a rerun with a different one is refused rather than mixing two teachers' traces.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from s1ray.storage import Location
from s1ray.traces.records import TRACE_COLUMNS, Key, unit_key

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class OutputMismatch(ValueError):
    """output_dir holds traces made with another generation setup."""


class InjectedFailure(RuntimeError):
    """Raised by the ``fail_after_shards`` testing hook."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def arrow_schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, t)()) for name, t in TRACE_COLUMNS.items()])


def _shard_bytes(rows: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), sink)
        return sink.getvalue().to_pybytes()
    return "".join(json.dumps({c: r.get(c) for c in TRACE_COLUMNS}, ensure_ascii=False) + "\n"
                   for r in rows).encode("utf-8")


def _location(out_dir: str | Path | Location) -> Location:
    return out_dir if isinstance(out_dir, Location) else Location(out_dir)


def read_shard(loc: Location, name: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(loc.path(name), columns=columns, filesystem=loc.fs).to_pylist()
    rows = []
    for line in loc.read_text(name).splitlines():
        if line.strip():
            r = json.loads(line)
            rows.append({c: r.get(c) for c in columns} if columns else r)
    return rows


def read_manifest(out_dir: str | Path | Location) -> dict[str, Any] | None:
    loc = _location(out_dir)
    if not loc.exists(MANIFEST):
        return None
    m = json.loads(loc.read_text(MANIFEST))
    if m.get("version") != MANIFEST_VERSION:
        raise OutputMismatch(f"{loc.uri(MANIFEST)}: manifest version {m.get('version')!r}, expected {MANIFEST_VERSION}")
    return m


def write_manifest(loc: Location, m: dict[str, Any]) -> None:
    loc.write_text(MANIFEST, json.dumps(m, indent=1) + "\n")


def completed_shards(out_dir: str | Path | Location) -> list[str]:
    """The names of the shards the manifest lists, in order."""
    return [s["file"] for s in (read_manifest(out_dir) or {}).get("shards", [])]


def key_errors(out_dir: str | Path | Location) -> dict[Key, bool]:
    """Each recorded key -> whether its current (latest) row is an error."""
    loc = _location(out_dir)
    state: dict[Key, bool] = {}
    for name in completed_shards(loc):
        for r in read_shard(loc, name, ["id", "sample_index", "error"]):
            state[unit_key(r)] = r.get("error") is not None
    return state


def skipped_keys(state: dict[Key, bool], retry_errors: bool) -> set[Key]:
    """Keys a rerun skips (``state``: :func:`key_errors`): every recorded key, or with
    ``retry_errors`` only the successful ones."""
    return {k for k, err in state.items() if not (retry_errors and err)}


def done_keys(out_dir: str | Path | Location, retry_errors: bool = False) -> set[Key]:
    return skipped_keys(key_errors(out_dir), retry_errors)


def read_traces(out_dir: str | Path | Location) -> list[dict[str, Any]]:
    """Every key's current row, in the order keys were first written (a retried key's later
    row replaces its earlier error row in place)."""
    loc = _location(out_dir)
    rows: dict[Key, dict[str, Any]] = {}
    for name in completed_shards(loc):
        for r in read_shard(loc, name):
            rows[unit_key(r)] = r
    return list(rows.values())


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_diff(va, vb, f"{prefix}{k}."))
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


class ShardWriter:
    """Buffers finished rows and writes them ``shard_size`` at a time (see the module docstring).

    ``retry_errors``: keys whose recorded row is an error are not done; their new rows
    supersede the old ones (manifest ``rows``/``errors`` count each key once, by its latest row;
    ``superseded`` counts the replaced rows).

    ``add`` ignores a key that is already done or already added in this run (Ray Data retries
    a failed task's whole block; the driver keeps the first copy). Until some row of this run
    has succeeded, a full shard of errors is *not* written: :class:`AllRowsFailed` is raised
    instead, so a job that fails wholesale (bad key, dead endpoint) exits non-zero and its rows
    stay pending for the rerun rather than being recorded as done.
    """

    def __init__(
        self,
        out_dir: str | Path,
        fmt: str,
        shard_size: int,
        generation: dict[str, Any],
        name: str = "traces",
        fail_after_shards: int | None = None,
        on_shard: Callable[[dict[str, Any]], None] | None = None,
        retry_errors: bool = False,
    ):
        self.dir = _location(out_dir)
        self.dir.makedirs()
        for stale in self.dir.names():  # a crashed run's temp files (local only): never done
            if stale.startswith(".") and ".tmp-" in stale:
                self.dir.delete(stale)
        self.fmt = fmt
        self.shard_size = shard_size
        self.fail_after_shards = fail_after_shards
        self.on_shard = on_shard
        m = read_manifest(self.dir)
        if m is None:
            m = {"version": MANIFEST_VERSION, "name": name, "created": _now(), "generation": generation,
                 "shards": [], "rows": 0, "errors": 0}
        elif m.get("generation") != generation:
            diff = _diff(m.get("generation") or {}, generation)
            raise OutputMismatch(
                f"{self.dir} holds traces from another setup ({'; '.join(diff[:5])}); "
                "use a new output_dir (or delete this one) to generate with this config"
            )
        self.manifest = m
        self.key_errors: dict[Key, bool] = key_errors(self.dir)
        self.done: set[Key] = skipped_keys(self.key_errors, retry_errors)
        self.buffer: list[dict[str, Any]] = []
        self.seen: set[Key] = set()
        self.duplicates = 0
        self.rows_ok = 0
        self.rows_err = 0
        self.shards_written = 0
        self.rows_written = 0

    def add(self, row: dict[str, Any]) -> bool:
        key = unit_key(row)
        if key in self.done or key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        if row.get("error") is None:
            self.rows_ok += 1
        else:
            self.rows_err += 1
        self.buffer.append(row)
        if len(self.buffer) >= self.shard_size:
            self.flush()
        return True

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            self.add(r)

    def flush(self) -> None:
        if not self.buffer:
            return
        rows, self.buffer = self.buffer, []
        errors = sum(r.get("error") is not None for r in rows)
        if self.rows_ok == 0 and errors == len(rows):
            raise AllRowsFailed(rows)
        index = len(self.manifest["shards"])
        name = f"shard-{index:05d}.{self.fmt}"
        self.dir.write_bytes(name, _shard_bytes(rows, self.fmt))
        entry = {"file": name, "rows": len(rows), "errors": errors, "created": _now()}
        m = dict(self.manifest)
        m["shards"] = [*m["shards"], entry]
        state = dict(self.key_errors)
        superseded = sum(unit_key(r) in state for r in rows)  # retried keys (retry_errors)
        state.update((unit_key(r), r.get("error") is not None) for r in rows)
        m["rows"] = len(state)
        m["errors"] = sum(state.values())
        if superseded or m.get("superseded"):
            m["superseded"] = m.get("superseded", 0) + superseded
        m["updated"] = _now()
        write_manifest(self.dir, m)  # from here on, the shard is done
        self.manifest = m
        self.key_errors = state
        self.done.update(unit_key(r) for r in rows)
        self.shards_written += 1
        self.rows_written += len(rows)
        if self.on_shard:
            self.on_shard(entry)
        if self.fail_after_shards is not None and self.shards_written >= self.fail_after_shards:
            raise InjectedFailure(f"fail_after_shards={self.fail_after_shards}: stopping after shard {name}")


class AllRowsFailed(RuntimeError):
    """Every row of this run failed so far: a permanent failure of the job, not of rows."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        errs: dict[str, int] = {}
        for r in rows:
            e = str(r.get("error"))[:300]
            errs[e] = errs.get(e, 0) + 1
        top = sorted(errs.items(), key=lambda kv: -kv[1])[:3]
        detail = "; ".join(f"{n}x {e}" for e, n in top)
        super().__init__(f"all {len(rows)} rows failed, none succeeded (nothing recorded; a rerun retries them): {detail}")
