"""Evaluation data: AIME24/MATH500, GPQA Diamond (hub or local copy), custom files.

Pure module (no Ray, no vLLM). Everything becomes one schema, :class:`EvalItem`:

* ``question`` is the prompt text the model sees (for multiple choice: the question with its
  four lettered, shuffled choices); ``answer`` is the gold answer (for multiple choice: the
  letter of the correct choice after shuffling).
* ``kind``: ``"math"`` (math-verify equivalence), ``"aime"`` (integer answers, "033" == 33),
  ``"mcq"`` (letter grading).

Where data comes from (first match wins):

1. ``path``: a local ``.jsonl``/``.json``/``.csv``/``.parquet`` file (:func:`s1ray.dataio.read_file`);
2. ``hf_name``: a HF hub dataset the config names (``datasets.load_dataset``; network);
3. ``$S1RAY_DATA_DIR/<name>.jsonl`` for a known set (aime24, math500, aime25), when the
   variable is set and the file is there (machines without network keep copies there);
4. a known set's public hub id (:data:`HUB_IDS`: MATH500 is ``HuggingFaceH4/MATH-500``, AIME24
   ``HuggingFaceH4/aime_2024``, GPQA Diamond ``Idavidrein/gpqa``, gated: the user's token in
   ``HF_TOKEN``).

Nothing is bundled with s1ray: a set none of these supplies is a :class:`DataError` whose one
line names the config field and the three ways to supply it. GPQA Diamond must never be posted
in plain text (its authors ask so): it comes from the hub or the user's own copy.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s1ray.dataio import DataError, load_hf, read_file

KINDS = ("math", "aime", "mcq")
LETTERS = "ABCD"
GPQA_HUB = ("Idavidrein/gpqa", "gpqa_diamond", "train")
GPQA_QUESTION = "Question"
GPQA_CORRECT = "Correct Answer"
GPQA_INCORRECT = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
GPQA_ID = "Record ID"
MCQ_INSTRUCTION = "Answer with the letter of the correct choice."

# Known datasets: name -> (kind, id field, question field, answer field) of their jsonl files.
BUILTIN: dict[str, tuple[str, str, str, str]] = {
    "aime24": ("aime", "id", "problem", "answer"),
    "aime25": ("aime", "id", "problem", "answer"),
    "math500": ("math", "id", "problem", "answer"),
}
# Their public hub copies: name -> (hub id, config, split, id column there).
HUB_IDS: dict[str, tuple[str, str | None, str, str]] = {
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "unique_id"),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", "id"),
    "gpqa_diamond": (GPQA_HUB[0], GPQA_HUB[1], GPQA_HUB[2], GPQA_ID),
}


@dataclass(frozen=True)
class EvalItem:
    id: str
    dataset: str
    question: str  # the prompt text
    answer: str  # gold (a letter for mcq)
    kind: str  # math | aime | mcq
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def default_data_dir() -> Path | None:
    """``$S1RAY_DATA_DIR`` (None when unset: s1ray ships no data)."""
    env = os.environ.get("S1RAY_DATA_DIR")
    return Path(env) if env else None


def _missing(name: str, where: str, tried: list[str]) -> DataError:
    if name not in BUILTIN and name not in HUB_IDS:
        known = sorted({*BUILTIN, *HUB_IDS})
        return DataError(f"{where}: {name!r} is not a known eval set ({', '.join(known)}): give `path:` "
                         "(a local file) or `hf_name:` (a HF hub dataset)")
    hub = HUB_IDS.get(name)
    hub_way = f"let it load from the HF hub as {hub[0]} (network)" if hub else "give `hf_name:` (a HF hub dataset)"
    return DataError(
        f"{where}: eval set {name!r} not found ({'; '.join(tried)}). Supply it one of three ways: `path:` "
        f"(a local file), S1RAY_DATA_DIR (a folder holding {name}.jsonl), or {hub_way}"
    )


def resolve_rows(
    name: str,
    path: str | Path | None = None,
    hf_name: str | None = None,
    hf_config: str | None = None,
    split: str | None = None,
    data_dir: str | Path | None = None,
    where: str = "datasets",
) -> tuple[list[dict[str, Any]], str, str | None]:
    """(rows, where they came from, the id column) of one eval set, by the module's order.
    ``where`` names the config field in errors (e.g. ``decontamination.eval_sets[0]``)."""
    if path is not None:
        if "://" not in str(path) and not Path(path).is_file():
            raise DataError(f"{where}.path: eval set {name!r}: file {str(path)!r} does not exist")
        return read_file(path), str(path), None
    if hf_name is not None:
        return load_hub(hf_name, hf_config, split or "test"), f"hf:{hf_name}", None
    tried = ["no `path:`"]
    d = Path(data_dir) if data_dir is not None else default_data_dir()
    if name in BUILTIN:
        if d is None:
            tried.append("S1RAY_DATA_DIR is not set")
        elif (d / f"{name}.jsonl").is_file():
            return read_file(d / f"{name}.jsonl"), str(d / f"{name}.jsonl"), None
        else:
            tried.append(f"no {name}.jsonl in S1RAY_DATA_DIR={str(d)!r}")
    hub = HUB_IDS.get(name)
    if hub is not None:
        try:
            return load_hub(hub[0], hub[1], split or hub[2]), f"hf:{hub[0]}", hub[3]
        except HubError as exc:
            tried.append(f"the hub has no copy reachable: {exc.reason}")
    raise _missing(name, where, tried)


# ------------------------------------------------------------------ the hub
class HubError(DataError):
    """A hub dataset could not be loaded; ``reason`` is the hub's answer in one line."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def load_hub(name: str, config: str | None = None, split: str = "test") -> list[dict[str, Any]]:
    """Rows of a HF hub dataset (network; gated sets read the token from ``HF_TOKEN``)."""
    try:
        ds = load_hf(name, config=config, split=split, token=os.environ.get("HF_TOKEN") or None)
    except Exception as exc:  # network, offline mode, auth, unknown name: say what to do instead
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise HubError(
            f"could not load {name!r} (config {config!r}, split {split!r}) from the HF hub: {reason}. "
            "Give a local copy with `path:` instead"
            + (" (GPQA is gated: accept its terms on the hub and set HF_TOKEN)" if "gpqa" in name.lower() else ""),
            reason,
        ) from None
    return [dict(r) for r in ds]


# ------------------------------------------------------------------ GPQA
def _stable_rng(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def shuffle_choices(correct: str, incorrect: Iterable[str], seed: int, qid: str) -> tuple[list[str], str]:
    """The four choices in a deterministic order for (seed, question id), and the gold letter."""
    choices = [correct, *incorrect]
    order = list(range(len(choices)))
    _stable_rng(seed, qid).shuffle(order)
    shuffled = [choices[i] for i in order]
    return shuffled, LETTERS[order.index(0)]


def format_mcq(question: str, choices: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"({LETTERS[i]}) {c.strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines + ["", MCQ_INSTRUCTION])


def gpqa_items(rows: list[dict[str, Any]], dataset: str = "gpqa_diamond", seed: int = 0) -> list[EvalItem]:
    """GPQA-format rows (Question, Correct Answer, Incorrect Answer 1..3) as shuffled MCQ items."""
    needed = (GPQA_QUESTION, GPQA_CORRECT, *GPQA_INCORRECT)
    items = []
    for n, row in enumerate(rows):
        missing = [c for c in needed if c not in row]
        if missing:
            raise DataError(f"{dataset}: row {n} lacks GPQA column(s) {missing}")
        question = str(row[GPQA_QUESTION]).strip()
        # No record id: the question text itself keys the shuffle (stable across row order).
        qid = str(row.get(GPQA_ID) or "q" + hashlib.sha256(question.encode()).hexdigest()[:12])
        choices, gold = shuffle_choices(
            str(row[GPQA_CORRECT]).strip(), [str(row[c]).strip() for c in GPQA_INCORRECT], seed, qid
        )
        items.append(
            EvalItem(qid, dataset, format_mcq(question, choices), gold, "mcq", {"choices": choices})
        )
    return items


# ------------------------------------------------------------------ generic
def records_to_items(
    rows: list[dict[str, Any]],
    dataset: str,
    kind: str,
    question_field: str = "problem",
    answer_field: str = "answer",
    id_field: str | None = "id",
    prompt_template: str | None = None,
) -> list[EvalItem]:
    """Rows with question/answer fields as items; ids default to the row index."""
    if kind not in KINDS:
        raise DataError(f"{dataset}: kind must be one of {list(KINDS)}, got {kind!r}")
    items = []
    for n, row in enumerate(rows):
        for f in (question_field, answer_field):
            if f not in row:
                raise DataError(f"{dataset}: row {n} has no field {f!r} (fields: {sorted(row)})")
        qid = str(row[id_field]) if id_field and row.get(id_field) not in (None, "") else str(n)
        question = str(row[question_field])
        if prompt_template:
            question = prompt_template.format(question=question, **{k: v for k, v in row.items() if k != "question"})
        items.append(EvalItem(qid, dataset, question, str(row[answer_field]).strip(), kind))
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"{dataset}: ids are not unique (field {id_field!r})")
    return items


def load_dataset_items(
    name: str,
    *,
    path: str | Path | None = None,
    hf_name: str | None = None,
    hf_config: str | None = None,
    split: str | None = None,
    kind: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    prompt_template: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    where: str = "datasets",
) -> list[EvalItem]:
    """Load one dataset as :class:`EvalItem` s (see the module docstring for the sources)."""
    is_gpqa = name.startswith("gpqa") or kind == "mcq"
    if split is None and hf_name is not None and is_gpqa:
        split = "train"
    rows, _, hub_id = resolve_rows(name, path, hf_name, hf_config, split, data_dir, where)
    if limit is not None:
        rows = rows[:limit]
    if is_gpqa and (not rows or GPQA_CORRECT in rows[0]):
        return gpqa_items(rows, name, seed)
    b_kind, b_id, b_q, b_a = BUILTIN.get(name, ("math", "id", "question", "answer"))
    if name not in BUILTIN and rows and question_field is None and "problem" in rows[0]:
        b_q = "problem"
    return records_to_items(
        rows,
        name,
        kind or b_kind,
        question_field or b_q,
        answer_field or b_a,
        id_field if id_field is not None else (hub_id or b_id),
        prompt_template,
    )
