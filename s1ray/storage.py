"""Where jobs read models from and write outputs to, checked on the driver before Ray starts.

One storage location serves every job: ``$S1RAY_STORAGE``, a directory every node sees (local
disk on one machine, an NFS/EFS mount on a cluster) or an ``s3://`` URI. A job's *relative*
output path (``runs/eval/tiny``) resolves under it; an absolute path or a URI is used as given.
Without it a relative path resolves against the current directory -- except under
``ray job submit --working-dir``, where the current directory is Ray's temporary copy of the
working dir (deleted with the job): there a relative output path is an error that says to set
``S1RAY_STORAGE``. A job passes the variable with ``--runtime-env-json
'{"env_vars": {"S1RAY_STORAGE": "..."}}'`` or finds it in the environment ``ray start`` ran in.

``s3://`` outputs: Ray Train writes checkpoints there itself (``train.storage_path``); the
other jobs write local files, and say so instead of writing somewhere else.

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


def resolve_output(path: str, field: str, *, uri_ok: bool = False) -> str:
    """Where output ``path`` (config field ``field``) really goes: a local absolute path, or a
    URI where ``uri_ok`` (the writer speaks pyarrow/fsspec URIs itself)."""
    root = storage_root()
    if is_uri(path):
        if not uri_ok:
            raise ConfigError(f"{field}: {path!r}: this job writes local files; s3:// is not yet supported "
                              "here (give a directory every node sees, e.g. an NFS/EFS mount)")
        return path
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    if root is not None:
        if is_uri(root):
            if uri_ok:
                return root.rstrip("/") + "/" + p.as_posix()
            raise ConfigError(f"{field}: {STORAGE_ENV}={root!r} is a URI; this job writes local files and s3:// "
                              f"is not yet supported here: point {STORAGE_ENV} at a directory every node sees "
                              f"(NFS/EFS), or give {field} an absolute path")
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
    if is_uri(model) or not looks_local(model):
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
