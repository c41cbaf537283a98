"""The project's question schema: one row per question, whatever dataset it came from.

Pure module (no Ray, no vLLM, no I/O). Fields:

* ``id`` (str, unique within a dataset) -- a stable key: trace generation resumes by it and
  curation joins on it. A record without one gets ``q-`` + the first 16 hex digits of the
  SHA-1 of its question text, so the same question always gets the same id.
* ``source`` (str) -- where it came from (``"math500"``, ``"NuminaMath/olympiads"``, ...).
* ``question`` (str, non-empty) -- the problem text, as a model would see it.
* ``solution`` (str | None) -- a reference solution (worked), if the dataset has one.
* ``answer`` (str | None) -- the reference final answer (numbers become strings: AIME's 33).
* ``metadata`` (dict) -- anything else (difficulty, subject, ...); JSON-serialisable.

:func:`question_from_record` maps a raw record onto the schema: ``fields`` names, for each
schema field, the record's key holding it (``{"question": "problem"}``); an unmapped field is
read from the key of the same name; the record's other keys go to ``metadata`` (with
``keep_extra``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

QUESTION_FIELDS: tuple[str, ...] = ("id", "source", "question", "solution", "answer", "metadata")


class SchemaError(ValueError):
    """A record that cannot be a question; the message names the record and the field."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    source: str = ""
    solution: str | None = None
    answer: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def question_id(question: str) -> str:
    """The id given to a record that has none: stable for the same question text."""
    return "q-" + hashlib.sha1(question.encode("utf-8")).hexdigest()[:16]


def check_field_map(fields: Mapping[str, str]) -> None:
    unknown = sorted(set(fields) - set(QUESTION_FIELDS))
    if unknown:
        raise SchemaError(f"fields: unknown schema field(s) {unknown}; expected some of {list(QUESTION_FIELDS)}")


def _opt_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v != v:  # NaN from pandas
        return None
    return v if isinstance(v, str) else str(v)


def _jsonable(v: Any) -> Any:
    """numpy scalars/arrays (from parquet) and other odd values -> plain JSON values."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def question_from_record(
    record: Mapping[str, Any],
    fields: Mapping[str, str] | None = None,
    source: str | None = None,
    keep_extra: bool = True,
    where: str = "record",
) -> Question:
    """Map one raw record onto :class:`Question` (see the module docstring)."""
    fields = dict(fields or {})
    check_field_map(fields)
    key = {f: fields.get(f, f) for f in QUESTION_FIELDS}
    q = record.get(key["question"])
    if not isinstance(q, str) or not q.strip():
        raise SchemaError(f"{where}: field {key['question']!r} (question) is missing or empty")
    rid = _opt_str(record.get(key["id"])) or question_id(q)
    src = _opt_str(record.get(key["source"])) or source or ""
    meta = record.get(key["metadata"])
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            meta = {"metadata": meta}
    meta = dict(_jsonable(meta)) if isinstance(meta, Mapping) else {}
    if keep_extra:
        used = set(key.values())
        for k, v in record.items():
            if k not in used and k not in meta:
                meta[k] = _jsonable(v)
    return Question(
        id=rid,
        question=q,
        source=src,
        solution=_opt_str(record.get(key["solution"])),
        answer=_opt_str(record.get(key["answer"])),
        metadata=meta,
    )


def check_unique_ids(questions: Iterable[Question]) -> None:
    counts = Counter(q.id for q in questions)
    dup = [i for i, n in counts.items() if n > 1]
    if dup:
        raise SchemaError(
            f"{len(dup)} duplicate id(s), e.g. {dup[:3]}; ids must be unique "
            "(map a unique column with fields.id, or drop the duplicates)"
        )
