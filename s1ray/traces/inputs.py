"""Reading a question dataset into the question schema (:mod:`s1ray.data.schema`).

``input.path`` is anything :func:`s1ray.dataio.iter_records` reads: a ``.jsonl``/``.json``/
``.csv``/``.parquet`` file, a folder of ``.parquet`` files, a directory written by
``datasets.Dataset.save_to_disk``, or a hub dataset name (needs the network). The driver reads
the questions: a question list is small next to its traces, and the driver needs every id
anyway to know what a rerun still has to generate.
"""

from __future__ import annotations

from pathlib import Path

from s1ray.data.schema import Question, SchemaError, check_unique_ids, question_from_record
from s1ray.dataio import DataError, iter_records, record_format
from s1ray.traces.config import InputConfig

# The input cannot be read; the message names the file and the row. The name callers know for
# the one foundation data error.
InputError = DataError


def read_questions(cfg: InputConfig) -> list[Question]:
    """All questions of ``cfg`` (first ``limit``), mapped and checked (unique, non-empty ids)."""
    where = "input.path"
    kind = record_format(cfg.path, cfg.format, where)
    source = cfg.source or (Path(cfg.path).stem if kind != "hf" else cfg.path)
    out: list[Question] = []
    try:
        rows = iter_records(cfg.path, fmt=kind, split=cfg.split, config=cfg.subset, where=where)
        for n, rec in enumerate(rows):
            if cfg.limit is not None and len(out) >= cfg.limit:
                break
            out.append(question_from_record(rec, cfg.fields, source, cfg.keep_extra, where=f"{cfg.path} row {n}"))
        check_unique_ids(out)
    except SchemaError as exc:
        raise DataError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"{where}: {cfg.path!r}: {exc}") from None
    if not out:
        raise DataError(f"{where}: {cfg.path!r}: no questions")
    return out
