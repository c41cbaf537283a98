"""Foundation I/O: reading records, writing files atomically, fingerprinting configs.

Every stage reads its datasets and writes its outputs through this module, so a dataset given
in one form works in every job and a crash never leaves half a file.

* :func:`load_records` / :func:`iter_records` -- rows (dicts) of a ``.jsonl``/``.json``/``.csv``
  /``.parquet`` file, a folder of ``.parquet`` files, a ``datasets`` ``save_to_disk`` folder, or
  a HF hub dataset; a file or folder may be a URI (``s3://...``), read from a local copy
  (:func:`local_copy`). :func:`load_hf` is the HF part alone (a ``datasets.Dataset``), for callers
  that hand the dataset to Ray.
* :func:`atomic_write` -- write a temporary file beside the target, fsync, ``os.replace``;
  :func:`replace_dir` does the same for a finished directory.
* :func:`fingerprint` -- the SHA-256 of a JSON-able config (keys sorted), for resume checks.

Errors are :class:`DataError`, whose message names the dataset (or the config field) and what
to do. No Ray, no stage imports; ``datasets`` and ``pyarrow`` are imported when needed.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet",
                ".pq": "parquet"}
_SAVED_DATASET = ("dataset_info.json", "dataset_dict.json", "state.json")


class DataError(ValueError):
    """A dataset cannot be read or used; the message names the dataset and what to do."""


# -- reading ----------------------------------------------------------------------------------
def iter_file(path: str | Path, fmt: str = "auto") -> Iterator[dict[str, Any]]:
    """Rows of one file (local, or a URI: read from a local copy); ``fmt`` (jsonl, json, csv,
    parquet) defaults to the suffix's."""
    p = Path(_local(str(path), "data file"))
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist")
    kind = FILE_FORMATS.get(p.suffix.lower()) if fmt == "auto" else fmt
    if kind == "jsonl":
        yield from _jsonl(p)
    elif kind == "json":
        yield from _json(p)
    elif kind == "csv":
        with p.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)
    elif kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(p).to_pylist()
    else:
        raise DataError(f"{p}: unsupported file type {p.suffix!r} (use .jsonl, .json, .csv or .parquet)")


def _local(source: str, where: str) -> str:
    """``source`` itself, or for a URI (``s3://...``) the path of its local copy."""
    if "://" not in source:
        return source
    try:
        return local_copy(source)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{where}: {source!r} cannot be read: {exc}") from None


CACHE_ENV = "S1RAY_CACHE"  # where a node keeps its copies of objects it reads from object storage


def local_copy(path: str) -> str:
    """A local path for ``path``: a file or a directory on object storage (``s3://...``: a model
    an SFT job exported, a curated dataset) is copied once per node under ``$S1RAY_CACHE``
    (default ``~/.cache/s1ray``) and that copy's path returned; anything else (a local path, a
    hub id) comes back as it is. This is how HF and vLLM loaders, which read local files, load
    what a job on another node wrote to S3.

    The copy is keyed by the URI and the objects' names, sizes and mtimes, so something written
    again to the same URI is copied again (S3's mtime has 1 s steps: a rewrite within the same
    second that keeps every size is not seen). It is made in a temporary directory and renamed into
    place, so a process that dies mid-copy leaves nothing another one would use."""
    if "://" not in path:
        return path
    import hashlib
    import shutil
    import tempfile

    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(path)
    root = root.rstrip("/")
    top = fs.get_file_info(root)
    is_file = top.type == pafs.FileType.File
    infos = [top] if is_file else fs.get_file_info(pafs.FileSelector(root, recursive=True))
    listing = sorted((i.path, i.size, str(i.mtime)) for i in infos if i.type == pafs.FileType.File)
    if not listing:
        raise FileNotFoundError(f"{path}: nothing there")
    key = hashlib.sha256(json.dumps([path, listing]).encode()).hexdigest()[:16]
    name = root.rsplit("/", 1)[-1]
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "s1ray").expanduser() / "copies"
    final = cache / key
    target = final / name if is_file else final
    if final.is_dir():
        return str(target)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=cache))
    try:
        pafs.copy_files(root, str(tmp / name) if is_file else str(tmp), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        try:
            os.replace(tmp, final)
        except OSError:  # another process on this node finished the same copy first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def read_file(path: str | Path, fmt: str = "auto") -> list[dict[str, Any]]:
    return list(iter_file(path, fmt))


def _jsonl(p: Path) -> Iterator[dict[str, Any]]:
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{p}:{n}: expected a JSON object per line")
            yield rec


def _json(p: Path) -> Iterator[dict[str, Any]]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise DataError(f"{p}: not valid JSON ({exc.msg})") from None
        yield from _jsonl(p)  # JSON lines under a .json name
        return
    if isinstance(data, dict):  # {"data": [...]}, {"questions": [...]}: the one list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list):
        raise DataError(f"{p}: expected a JSON list of records (or an object holding one list)")
    yield from data


def load_hf(path: str, *, split: str = "train", config: str | None = None, revision: str | None = None,
            token: str | None = None, **load_kwargs: Any):
    """A ``datasets.Dataset``: one split of a ``save_to_disk`` folder, or of a hub dataset
    (``datasets.load_dataset``; network). Hub failures propagate as ``datasets`` raises them, so
    each caller can say what to do instead."""
    import datasets

    if Path(path).is_dir():
        ds = datasets.load_from_disk(str(path))
        if not isinstance(ds, datasets.DatasetDict):
            return ds
        if split not in ds:
            raise DataError(f"{path}: split {split!r} not found (the saved dataset has {sorted(ds)}); set `split`")
        return ds[split]
    opt = {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}
    return datasets.load_dataset(path, config, split=split, **opt, **load_kwargs)


def record_format(source: str, fmt: str = "auto", where: str = "source") -> str:
    """What ``source`` is: a file format (jsonl, json, csv, parquet), ``parquet_dir`` or ``hf``
    (a ``save_to_disk`` folder or a hub name). ``where`` names the config field in errors."""
    source = _local(source, where)
    p = Path(source)
    if fmt == "hf":
        return fmt
    if fmt != "auto":
        if not (p.is_dir() if fmt == "parquet_dir" else p.is_file()):
            raise DataError(f"{where}: {source!r} does not exist")
        return fmt
    if p.is_dir():
        if any((p / m).exists() for m in _SAVED_DATASET):
            return "hf"
        if any(p.glob("*.parquet")):
            return "parquet_dir"
        raise DataError(f"{where}: {source!r} is a directory but neither a saved HF dataset nor a folder of "
                        ".parquet files")
    suffix = p.suffix.lower()
    if p.is_file():
        if suffix not in FILE_FORMATS:
            raise DataError(f"{where}: {source!r}: unsupported file type {suffix!r} (use .jsonl, .json, .csv or "
                            ".parquet, or name the format)")
        return FILE_FORMATS[suffix]
    if suffix in FILE_FORMATS or source.startswith((".", "/", "~")):
        raise DataError(f"{where}: {source!r} does not exist")
    return "hf"  # not a local path: a hub dataset


def iter_records(source: str, *, fmt: str = "auto", split: str = "train", config: str | None = None,
                 where: str = "source") -> Iterator[dict[str, Any]]:
    """Rows of ``source`` in any supported form (see the module docstring), read lazily."""
    source = _local(source, where)
    kind = record_format(source, fmt, where)
    if kind == "parquet_dir":
        for f in sorted(Path(source).glob("*.parquet")):
            yield from iter_file(f, "parquet")
    elif kind != "hf":
        yield from iter_file(source, kind)
    else:
        try:
            ds = load_hf(source, split=split, config=config)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        except Exception as exc:  # no network, no such dataset or split
            raise DataError(f"{where}: cannot load HF dataset {source!r} split {split!r}: {exc}") from None
        yield from (dict(r) for r in ds)


def load_records(source: str, *, fmt: str = "auto", split: str = "train", config: str | None = None,
                 limit: int | None = None, where: str = "source") -> list[dict[str, Any]]:
    """The first ``limit`` (default: all) rows of ``source`` as dicts."""
    return list(itertools.islice(iter_records(source, fmt=fmt, split=split, config=config, where=where), limit))


# -- writing ----------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path | str:
    """``write(tmp)`` to a hidden temporary file beside ``path``, fsync it, ``os.replace`` it into
    place: a reader sees the old file or the whole new one, never a part. The temporary file is
    removed when ``write`` fails. ``path`` may be a URI (``s3://bucket/key``): the file is
    written locally, then uploaded in one PUT, and objects appear whole."""
    if isinstance(path, str) and "://" in path:
        return _put_object(path, write)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def _put_object(uri: str, write: Callable[[Path], Any]) -> str:
    import tempfile

    import pyarrow.fs as pafs

    fs, key = pafs.FileSystem.from_uri(uri)
    with tempfile.TemporaryDirectory(prefix="s1ray-put-") as tmp_dir:
        tmp = Path(tmp_dir) / Path(key).name
        write(tmp)
        with open(tmp, "rb") as src, fs.open_output_stream(key) as dst:
            shutil.copyfileobj(src, dst, length=8 << 20)
    return uri


def join_location(where: str | Path, name: str) -> str | Path:
    """``where``/``name`` for a local directory (a Path) or a URI (a str: ``Path`` would fold ``//``)."""
    if isinstance(where, str) and "://" in where:
        return where.rstrip("/") + "/" + name
    return Path(where) / name


def write_text_atomic(path: str | Path, text: str) -> Path | str:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> Path | str:
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n")


def replace_dir(tmp: Path, final: str | Path, *, last: Sequence[str] = ()) -> None:
    """Swap the finished directory ``tmp`` in as ``final`` (the old one, if any, is removed).

    ``final`` may be a URI (``s3://bucket/prefix``), where no rename exists: the old objects are
    deleted (the ``last`` names -- completion markers -- first), ``tmp``'s files uploaded, the
    ``last`` ones after all the others, and ``tmp`` removed. A reader that trusts only a
    directory whose marker is there never sees a half-written one."""
    if isinstance(final, str) and "://" in final:
        _put_dir(Path(tmp), final, tuple(last))
        return
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _put_dir(tmp: Path, uri: str, last: tuple[str, ...]) -> None:
    import tempfile

    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    root = root.rstrip("/")
    for name in last:
        if fs.get_file_info(f"{root}/{name}").type == pafs.FileType.File:
            fs.delete_file(f"{root}/{name}")
    fs.delete_dir_contents(root, missing_dir_ok=True)
    with tempfile.TemporaryDirectory(prefix="s1ray-last-") as side:
        held = [(name, Path(side) / name) for name in last if (tmp / name).is_file()]
        for name, dst in held:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp / name, dst)
        local = pafs.LocalFileSystem()
        pafs.copy_files(str(tmp.resolve()), root, source_filesystem=local, destination_filesystem=fs)
        for name, src in held:
            pafs.copy_files(str(src), f"{root}/{name}", source_filesystem=local, destination_filesystem=fs)
    shutil.rmtree(tmp, ignore_errors=True)


def _filesystem(where: str | Path):
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs as pafs

    if isinstance(where, str) and "://" in where:
        return pafs.FileSystem.from_uri(where)
    return pafs.LocalFileSystem(), str(Path(where).expanduser().resolve())


def copy_tree(src: str | Path, dst: str | Path) -> None:
    """Copy the directory ``src`` into ``dst``, each a local path or a URI (``s3://...``);
    files already at ``dst`` under the same names are overwritten. Not atomic: a caller that
    must know the copy is whole writes its own marker after it."""
    import pyarrow.fs as pafs

    src_fs, src_root = _filesystem(src)
    dst_fs, dst_root = _filesystem(dst)
    if src_fs.get_file_info(src_root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{src}: no such directory")
    dst_fs.create_dir(dst_root, recursive=True)
    pafs.copy_files(src_root, dst_root, source_filesystem=src_fs, destination_filesystem=dst_fs)


# -- fingerprints -----------------------------------------------------------------------------
def fingerprint(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as sorted-key JSON; values JSON cannot hold count by ``str()``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()
