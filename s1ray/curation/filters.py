"""The curation stages' decisions, pure (no Ray, no I/O): unit-tested directly, run inside Ray
Data tasks by the stage modules of :mod:`s1ray.curation.stages`.

Every decision gives a row one *reason* (``None``: kept) and a short ``detail``; the pipeline
writes rejected rows with both into the stage's rejects, so rows in = rows out + rejects.

Dedupe / decontamination (one stage, reasons checked in this order):

* ``contaminated:<eval set>`` -- the question shares a word 8-gram with an evaluation question
  (s1, Appendix C.5), or equals a shorter-than-8-words evaluation question. One refinement over
  s1: 8-grams found in more than ``boilerplate_df`` evaluation questions are instructions, not
  content ("express your answer as a common fraction in lowest terms" is in dozens of MATH500
  questions) and do not count; ``boilerplate_df: 0`` is s1's plain rule;
* ``exact_duplicate`` -- same :func:`~s1ray.curation.text.exact_key` as a kept row;
* ``near_duplicate`` -- estimated Jaccard >= threshold with a kept row (MinHash + LSH).

Which copy is kept is deterministic, whatever the block order: rows are visited by
:func:`keep_priority` (trusted sources first, then the order of ``sources``, then id), and a row
is dropped only for a *kept* row it duplicates -- greedy, so a chain A~B~C with A, C dissimilar
never drops C for A (what a union-find clustering would do).

LSH: the signature is cut into ``bands`` bands of ``r = num_perm / bands`` rows; two questions
become candidates if some band is equal, which happens with probability ``1 - (1 - J^r)^bands``
(with 128 = 16 x 8: 95% at J = 0.8, 6% at J = 0.5); candidates are then checked against the
threshold on the full signature.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from s1ray.curation import text as T

# ------------------------------------------------------------------------------- dedupe
KEEP = None  # the reason of a kept row


def is_trusted_source(source: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(source or "", p) for p in patterns)


def keep_priority(row: Mapping[str, Any], source_order: Mapping[str, int], trusted: Sequence[str]) -> tuple:
    """Sort key: lower is kept first among duplicates."""
    src = row.get("source") or ""
    return (0 if is_trusted_source(src, trusted) else 1, source_order.get(row.get("ingest_source") or "", 1 << 30), str(row["id"]))


class EvalIndex:
    """The n-grams of the evaluation questions, for :meth:`match`."""

    def __init__(self, eval_sets: Mapping[str, Iterable[str]], n: int = 8, short_exact: bool = True,
                 boilerplate_df: int = 0):
        self.n = n
        self.grams: dict[str, str] = {}
        self.short: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        df: Counter = Counter()
        for name, questions in eval_sets.items():
            count = 0
            for q in questions:
                count += 1
                w = T.words(q)
                if len(w) >= n:
                    grams = T.ngrams(w, n)
                    df.update(grams)
                    for g in grams:
                        self.grams.setdefault(g, name)
                elif short_exact and w:
                    self.short.setdefault(" ".join(w), name)
            self.sizes[name] = count
        self.boilerplate = sorted(g for g, c in df.items() if boilerplate_df and c > boilerplate_df)
        for g in self.boilerplate:
            del self.grams[g]

    def match(self, question: str) -> tuple[str, str] | None:
        """(eval set, the shared n-gram) of the first overlap, or None."""
        w = T.words(question)
        for i in range(len(w) - self.n + 1):
            g = " ".join(w[i : i + self.n])
            name = self.grams.get(g)
            if name is not None:
                return name, g
        if self.short:
            joined = " ".join(w)
            if joined in self.short:
                return self.short[joined], joined
        return None


def dedupe_decisions(
    rows: Sequence[Mapping[str, Any]],
    *,
    exact: bool = True,
    near: bool = True,
    bands: int = 16,
    threshold: float = 0.8,
    source_order: Mapping[str, int] | None = None,
    trusted: Sequence[str] = (),
) -> dict[str, tuple[str, str]]:
    """``{id: (reason, detail)}`` for the rows to drop (see the module docstring).

    Each row needs ``id``, ``source``, ``ingest_source``, ``contaminated`` (eval set or None),
    ``contam_detail``, ``exact_key`` and ``minhash`` (uint32 signature, array or bytes).
    """
    source_order = source_order or {}
    out: dict[str, tuple[str, str]] = {}
    order = sorted(range(len(rows)), key=lambda i: keep_priority(rows[i], source_order, trusted))
    seen_exact: dict[str, str] = {}
    kept_sigs: list[np.ndarray] = []
    kept_ids: list[str] = []
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i in order:
        r = rows[i]
        rid = str(r["id"])
        if r.get("contaminated"):
            out[rid] = (f"contaminated:{r['contaminated']}", str(r.get("contam_detail") or ""))
            continue
        if exact:
            k = r["exact_key"]
            if k in seen_exact:
                out[rid] = ("exact_duplicate", f"of {seen_exact[k]}")
                continue
            seen_exact[k] = rid
        if not near:
            continue
        sig = r["minhash"]
        sig = np.frombuffer(sig, dtype=np.uint32) if isinstance(sig, (bytes, bytearray)) else np.asarray(sig, np.uint32)
        width = len(sig) // bands
        keys = [(b, sig[b * width : (b + 1) * width].tobytes()) for b in range(bands)]
        cands = sorted({j for key in keys for j in buckets.get(key, ())})
        if cands:
            sims = (np.stack([kept_sigs[j] for j in cands]) == sig).mean(axis=1)
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                out[rid] = ("near_duplicate", f"of {kept_ids[cands[best]]} (J~{sims[best]:.2f})")
                continue
        idx = len(kept_ids)
        kept_ids.append(rid)
        kept_sigs.append(sig)
        for key in keys:
            buckets[key].append(idx)
    return out


# ------------------------------------------------------------------------------- quality
_NUMBERED = re.compile(r"^[ \t]*(?:\(|\[)?(\d{1,3})(?:[.)\]](?!\d)|\)\.?)[ \t]", re.M)


def numbering_consistent(text: str) -> bool:
    """Numbered lines count 1, 2, 3...; a new list may restart at 1. False for "12. Find ..."
    (an exam number left in), "1. ... 2. ... 4. ..." (a skipped item), or "2. ..." first."""
    expect = 1
    for m in _NUMBERED.finditer(text or ""):
        n = int(m.group(1))
        if n == expect or n == 1:
            expect = n + 1
        else:
            return False
    return True


@dataclass(frozen=True)
class Pattern:
    name: str
    kind: str
    fields: tuple[str, ...]
    rx: re.Pattern | None = None
    unless: re.Pattern | None = None

    @classmethod
    def build(cls, name: str, kind: str = "regex", pattern: str | None = None, unless: str | None = None,
              fields: Sequence[str] = ("question",), ignore_case: bool = True) -> "Pattern":
        flags = re.I if ignore_case else 0
        return cls(name=name, kind=kind, fields=tuple(fields),
                   rx=re.compile(pattern, flags) if pattern else None,
                   unless=re.compile(unless, flags) if unless else None)

    def flags(self, text: str | None) -> bool:
        if not text:
            return False
        if self.kind == "numbering":
            return not numbering_consistent(text)
        if self.rx is None or not self.rx.search(text):
            return False
        return not (self.unless is not None and self.unless.search(text))


def compile_patterns(specs: Iterable[Mapping[str, Any]]) -> list[Pattern]:
    return [Pattern.build(s["name"], s.get("kind", "regex"), s.get("pattern"), s.get("unless"),
                          s.get("fields", ("question",)), s.get("ignore_case", True)) for s in specs]


def pattern_reason(texts: Mapping[str, str | None], patterns: Sequence[Pattern]) -> tuple[str, str] | None:
    """(``quality:<name>``, field) of the first pattern that flags one of its fields in ``texts``
    (fields absent from ``texts`` are not checked), or None."""
    for p in patterns:
        for f in p.fields:
            if f in texts and p.flags(texts[f]):
                return f"quality:{p.name}", f
    return None


def trace_failure(trace: Mapping[str, Any], *, drop_truncated: bool = True, drop_empty_attempt: bool = True) -> str | None:
    """Why a teacher trace cannot be used at all (generation failed), or None."""
    if trace.get("error"):
        return "trace_error"
    if not (trace.get("thinking") or "").strip():
        return "empty_thinking"
    if drop_empty_attempt and not (trace.get("attempt") or "").strip():
        return "empty_attempt"
    if drop_truncated and trace.get("finish_reason") == "length":
        return "truncated"
    return None


def best_trace(samples: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The sample to use for a question: usable before pattern-flagged before failed, then by
    trace input order and sample index. Each sample has ``failure``, ``pattern``, ``input_index``,
    ``sample_index``."""
    if not samples:
        return None
    return min(samples, key=lambda s: (s.get("failure") is not None, s.get("pattern") is not None,
                                       int(s.get("input_index") or 0), int(s.get("sample_index") or 0)))


def trusted_rule_matches(source: str, rules: Sequence[Mapping[str, Any]], teacher_correct: bool | None,
                         thinking_tokens: int | None) -> bool:
    """s1's Algorithm 1, lines 4-10: a trusted source, the teacher right (if required) and the
    trace long enough (if required)."""
    for r in rules:
        if not fnmatch.fnmatchcase(source or "", r["source"]):
            continue
        if r.get("require_correct", True) and not teacher_correct:
            continue
        if (thinking_tokens or 0) < int(r.get("min_thinking_tokens") or 0):
            continue
        return True
    return False


_COUNT = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str | None) -> int:
    """Fallback trace length without a tokenizer: words + symbols (within ~30% of BPE counts on
    English maths; set ``quality.length.tokenizer`` for the student's exact count)."""
    return len(_COUNT.findall(text or ""))


# ------------------------------------------------------------------------------- difficulty
def difficulty_reason(
    solver_stats: Mapping[str, Mapping[str, int]],
    solvers: Sequence[str],
    *,
    has_reference: bool,
    trusted: bool = False,
    on_missing: str = "drop",
    on_no_reference: str = "keep",
) -> tuple[str, str] | None:
    """Why a question is not hard enough (or of unknown difficulty), or None.

    ``solver_stats[solver] = {"samples": graded samples, "correct": how many were right}``. A
    trusted row is never dropped here (s1 kept its trusted rows whatever the solvers did).
    """
    if trusted:
        return None
    if not has_reference:
        return ("no_reference", "") if on_no_reference == "drop" else None
    for s in solvers:
        st = solver_stats.get(s) or {}
        if int(st.get("correct") or 0) > 0:
            return f"solved:{s}", f"{st['correct']}/{st.get('samples', 0)} samples right"
    if on_missing == "drop":
        for s in solvers:
            if not int((solver_stats.get(s) or {}).get("samples") or 0):
                return f"no_solver_output:{s}", ""
    return None


def aggregate_grades(graded: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """``{id: {solver: {samples, correct}}}`` from graded solver rows (``id``, ``solver``,
    ``correct``: True/False, or None for an errored sample, which is not counted)."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for g in graded:
        if g.get("correct") is None:
            continue
        st = out[str(g["id"])].setdefault(g["solver"], {"samples": 0, "correct": 0})
        st["samples"] += 1
        st["correct"] += int(bool(g["correct"]))
    return dict(out)


def field_value(row: Mapping[str, Any], field: str, metadata: Mapping[str, Any] | None = None) -> Any:
    """``source`` or ``metadata.subject`` style lookups (``metadata`` already decoded)."""
    if field.startswith("metadata."):
        node: Any = metadata or {}
        for part in field.split(".")[1:]:
            node = node.get(part) if isinstance(node, Mapping) else None
        return node
    return row.get(field)
