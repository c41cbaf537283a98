"""The curation stages' decisions, pure (no Ray, no I/O): unit-tested directly, run inside Ray
Data tasks by the stage modules of :mod:`s1ray.curation.stages`.

Every decision gives a row one *reason* (``None``: kept) and a short ``detail``; the pipeline
writes rejected rows with both into the stage's rejects, so rows in = rows out + rejects.

Decontamination (the dedupe stage's first reason; :mod:`s1ray.curation.duplicates` has the rest):
``contaminated:<eval set>`` -- the question shares a word 8-gram with an evaluation question
(s1, Appendix C.5), or equals a shorter-than-8-words evaluation question. One refinement over
s1: 8-grams found in more than ``boilerplate_df`` evaluation questions are instructions, not
content ("express your answer as a common fraction in lowest terms" is in dozens of MATH500
questions) and do not count; ``boilerplate_df: 0`` is s1's plain rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s1ray.curation import text as T

# ------------------------------------------------------------------------------- decontamination
def is_trusted_source(source: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(source or "", p) for p in patterns)


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
