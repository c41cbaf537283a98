"""Where jobs read models from and write outputs to, checked on the driver before Ray starts.

One storage location serves every job: ``$S1RAY_STORAGE``, a directory every node sees (local
disk on one machine, an NFS/EFS mount on a cluster) or an ``s3://`` URI. A job's *relative*
output path (``runs/eval/tiny``) resolves under it; an absolute path or a URI is used as given.
Without it a relative path resolves against the current directory -- except under
``ray job submit --working-dir``, where the current directory is Ray's temporary copy of the
working dir (deleted with the job): there a relative output path is an error that says to set
``S1RAY_STORAGE``. A job passes the variable with ``--runtime-env-json
'{"env_vars": {"S1RAY_STORAGE": "..."}}'`` or finds it in the environment ``ray start`` ran in.

``s3://`` outputs: every job takes one. Ray Train writes checkpoints there itself
(``train.storage_path``); trace shards + manifest, eval samples and reports, curation stages and
the pipeline's markers go through pyarrow filesystems (:class:`Location`, and the one atomic
writer :func:`s1ray.dataio.atomic_write`, which PUTs a URI whole); credentials and endpoint come
from the usual ``AWS_*`` variables. Loaders that read local files (HF, vLLM, datasets) read what
another node wrote to S3 through :func:`s1ray.dataio.local_copy`, one copy per node.

Several nodes: once Ray runs on more than one alive node, a job refuses an output location
that is a local path (:func:`check_shared`), since another node would not see it -- unless
``$S1RAY_STORAGE_SHARED=1`` says local paths are a mount every node shares (NFS/EFS).

Model paths: a local model that is not in the job's uploaded working dir (``.tiny/`` is
gitignored, so it never travels) is an error naming the field and the two ways that work on a
cluster: an absolute path on storage every node sees, or a HF hub id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from s1ray.config import ConfigError

STORAGE_ENV = "S1RAY_STORAGE"
# Set by Ray's job supervisor in the entrypoint's environment: the job's runtime env as JSON.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# Opt-in: local paths are on a mount every node sees (NFS/EFS), so a multi-node run may use them.
SHARED_ENV = "S1RAY_STORAGE_SHARED"
STORAGE_HINT = (f"set {STORAGE_ENV} to a directory every node sees or an s3:// URI, e.g. ray job submit "
                f"--runtime-env-json '{{\"env_vars\": {{\"{STORAGE_ENV}\": \"/mnt/shared/s1ray\"}}}}' ...")


def is_uri(path: str) -> bool:
    return "://" in path


def storage_root() -> str | None:
    """``$S1RAY_STORAGE`` (None when unset or empty)."""
    return os.environ.get(STORAGE_ENV) or None


def uploaded_working_dir() -> bool:
    """True when this process is a ``ray job submit`` entrypoint running in an uploaded working dir."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return False
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (json.JSONDecodeError, AttributeError):
        return False
    return bool(runtime_env.get("working_dir"))


def resolve_output(path: str, field: str) -> str:
    """Where output ``path`` (config field ``field``) really goes: a local absolute path, or a URI
    (every job's writer speaks pyarrow URIs)."""
    root = storage_root()
    if is_uri(path):
        return path
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    if root is not None:
        if is_uri(root):
            return root.rstrip("/") + "/" + p.as_posix()
        return str(Path(root).expanduser().resolve() / p)
    if uploaded_working_dir():
        raise ConfigError(f"{field}: relative path {path!r} would land in Ray's temporary copy of the working "
                          f"dir, deleted with the job: {STORAGE_HINT}, or give {field} an absolute path")
    return str(p.resolve())


def announce(job: str, where: str, echo=None) -> None:
    """The one line every job prints: where its outputs went (on the terminal, not in the log)."""
    from s1ray.console import say

    (echo or say)(f"[s1ray] {job}: outputs in {where}")


def looks_local(model: str) -> bool:
    """A filesystem path rather than a hub id (hub ids are ``owner/name``, never starting with
    ``.``, ``/`` or ``~``)."""
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists() or model.count("/") > 1


def check_model(model: str, field: str) -> str:
    """``model`` as the driver will pass it on: an existing local path (made absolute), or a hub id.
    A local path that does not exist here is an error naming ``field``."""
    if is_uri(model):
        if not Location(model).exists("config.json"):
            raise ConfigError(f"{field}: {model!r} holds no config.json (give the directory of a HF model, "
                              "e.g. an SFT job's export_dir)")
        return model
    if not looks_local(model):
        return model
    p = Path(model).expanduser()
    if p.exists():
        return str(p.resolve())
    if uploaded_working_dir() and not p.is_absolute():
        raise ConfigError(
            f"{field}: {model!r} is a local path that did not travel with the job (Ray uploads the working dir "
            "minus what .gitignore excludes, and models are excluded): give an absolute path on storage every "
            "node sees (e.g. /mnt/shared/models/x), or a HF hub id (e.g. Qwen/Qwen2.5-7B-Instruct)")
    raise ConfigError(f"{field}: model path {str(p)!r} does not exist (give an existing directory or a HF hub id)")


def declared_shared() -> bool:
    return os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes")


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this process is connected to (0 when not connected)."""
    import ray

    if not ray.is_initialized():
        return 0
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_shared(where: str | None, field: str) -> None:
    """Refuse a node-local output location (config field ``field``) on a multi-node Ray cluster,
    before anything is written: what one node writes there, no other node can read or resume."""
    if where is None or is_uri(where) or declared_shared():
        return
    nodes = alive_nodes()
    if nodes > 1:
        raise ConfigError(
            f"{field}: {where!r} is a local path and this Ray cluster has {nodes} nodes, so other nodes "
            f"would not see it: give an s3:// URI (or set {STORAGE_ENV} to one), or, when this path is a "
            f"mount every node shares (NFS/EFS), set {SHARED_ENV}=1")


class Location:
    """A directory given as a local path or a URI (``s3://bucket/prefix``), through pyarrow's
    filesystems. Names are ``/``-separated paths below the directory."""

    def __init__(self, where: str | Path):
        import pyarrow.fs as pafs

        self.where = str(where)
        if is_uri(self.where):
            self.fs, self.root = pafs.FileSystem.from_uri(self.where)
            self.local = False
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(self.where).expanduser().resolve())
            self.local = True
        self.root = self.root.rstrip("/")

    def __str__(self) -> str:
        return self.where

    def path(self, name: str) -> str:
        """``name``'s path inside ``self.fs`` (what pyarrow readers take with ``filesystem=``)."""
        return f"{self.root}/{name}"

    def uri(self, name: str) -> str:
        return self.where.rstrip("/") + "/" + name

    def makedirs(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def exists(self, name: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def names(self) -> list[str]:
        """The files directly inside the directory (none when it does not exist)."""
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.root, allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def write_bytes(self, name: str, data: bytes) -> None:
        """Readers see the old object or the whole new one: locally a temp file + rename, on S3 a
        single PUT (objects appear whole)."""
        if self.local:
            from s1ray.dataio import atomic_write

            atomic_write(self.path(name), lambda p: p.write_bytes(data))
            return
        with self.fs.open_output_stream(self.path(name)) as f:
            f.write(data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    def delete(self, name: str) -> None:
        self.fs.delete_file(self.path(name))
