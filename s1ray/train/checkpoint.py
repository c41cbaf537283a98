"""Checkpoint layout, completeness markers, and fetching one rank's share (no DeepSpeed here).

Every rank saves into its own local temp dir and reports it to Ray Train, which merges the
ranks' files into one checkpoint directory on the run's storage::

    ds/                                  DeepSpeed's tag dir (engine.save_checkpoint(dir, tag="ds"))
      zero_pp_rank_<r>_mp_rank_00_model_states.pt, bf16_zero_pp_rank_<r>_..._optim_states.pt, ...
    latest                               (DeepSpeed, rank 0)
    s1ray_meta.json                      (rank 0) step, epoch, world size, per-step metrics history
    _s1ray_complete.rank<r>.json         (rank r, written LAST) manifest: every file rank r wrote + size

A checkpoint is complete only if the meta file exists and, for every rank of its world, the
marker exists and every file in that marker's manifest exists with the recorded size. Upload
order inside Ray is not guaranteed (and Ray may register a checkpoint that not every rank
finished uploading, e.g. with relaxed collectives on preemption), so the manifest -- not the
order of writes -- is what makes "complete" checkable. An incomplete checkpoint is never
loaded: resume falls back to the newest complete sibling, or starts from scratch.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from s1ray.dataio import write_text_atomic

log = logging.getLogger("s1ray.train")  # a worker's print() would show twice (see loop.py)

META_FILE = "s1ray_meta.json"
MARKER_PREFIX = "_s1ray_complete.rank"
DS_TAG = "ds"
_RANK_FILE = re.compile(r"zero_pp_rank_(\d+)_")


class IncompleteCheckpoint(RuntimeError):
    pass


def marker_name(rank: int) -> str:
    return f"{MARKER_PREFIX}{rank}.json"


def write_meta(ckpt_dir: str | Path, meta: dict[str, Any]) -> None:
    write_text_atomic(Path(ckpt_dir) / META_FILE, json.dumps(meta))


def write_marker(ckpt_dir: str | Path, rank: int) -> None:
    """Write rank ``rank``'s completeness marker: call after every other file of this rank."""
    root = Path(ckpt_dir)
    files = {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(MARKER_PREFIX)
    }
    write_text_atomic(root / marker_name(rank), json.dumps({"rank": rank, "files": files}))


def _fs_and_path(checkpoint) -> tuple[Any, str]:
    return checkpoint.filesystem, checkpoint.path


def _read_json(fs, path: str) -> dict | None:
    from pyarrow.fs import FileType

    if fs.get_file_info(path).type != FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def validate(fs, path: str) -> dict[str, Any]:
    """The checkpoint's meta if it is complete; raises IncompleteCheckpoint naming what is missing."""
    meta = _read_json(fs, posixpath.join(path, META_FILE))
    if meta is None:
        raise IncompleteCheckpoint(f"{path}: no {META_FILE}")
    listed: dict[str, int] = {}
    for r in range(int(meta["world_size"])):
        marker = _read_json(fs, posixpath.join(path, marker_name(r)))
        if marker is None:
            raise IncompleteCheckpoint(f"{path}: rank {r} has no completion marker")
        listed.update(marker["files"])
    infos = fs.get_file_info([posixpath.join(path, rel) for rel in listed])
    for (rel, size), info in zip(listed.items(), infos):
        if info.size != size:
            raise IncompleteCheckpoint(f"{path}: {rel} is missing or has {info.size} bytes, expected {size}")
    return meta


def find_complete(checkpoint):
    """(checkpoint, meta) for ``checkpoint`` if complete, else for its newest complete sibling;
    (None, None) if there is none. ``checkpoint`` is a ``ray.train.Checkpoint``."""
    from pyarrow.fs import FileSelector, FileType

    fs, path = _fs_and_path(checkpoint)
    try:
        return checkpoint, validate(fs, path)
    except IncompleteCheckpoint as exc:
        log.info("ignoring incomplete checkpoint: %s", exc)
    parent = posixpath.dirname(path.rstrip("/"))
    candidates = []
    for info in fs.get_file_info(FileSelector(parent, allow_not_found=True)):
        if info.type == FileType.Directory and info.path.rstrip("/") != path.rstrip("/"):
            try:
                meta = validate(fs, info.path)
            except IncompleteCheckpoint:
                continue
            except Exception:  # not a checkpoint dir at all
                continue
            candidates.append((meta["step"], info.path, meta))
    if not candidates:
        return None, None
    step, best, meta = max(candidates, key=lambda c: c[0])
    log.info("falling back to complete checkpoint %s (step %s)", best, step)
    return type(checkpoint)(best, filesystem=fs), meta


def is_local(checkpoint) -> bool:
    from pyarrow.fs import LocalFileSystem

    return isinstance(checkpoint.filesystem, LocalFileSystem)


def fetch_for_rank(checkpoint, rank: int, dest: str | Path) -> str:
    """A local directory holding what rank ``rank`` needs to load: the checkpoint itself when it
    is on a local/NFS filesystem; otherwise only this rank's ZeRO shards plus the shared files
    are downloaded (not every rank's optimizer states, which for 32B are ~450 GB in total)."""
    from pyarrow.fs import FileSelector, FileType, LocalFileSystem, copy_files

    fs, path = _fs_and_path(checkpoint)
    if is_local(checkpoint):
        return path
    dest = Path(dest)
    for info in fs.get_file_info(FileSelector(path, recursive=True)):
        if info.type != FileType.File:
            continue
        rel = posixpath.relpath(info.path, path)
        m = _RANK_FILE.search(posixpath.basename(rel))
        if m and int(m.group(1)) != rank:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        copy_files(info.path, str(dest / rel), source_filesystem=fs, destination_filesystem=LocalFileSystem())
    return str(dest)
