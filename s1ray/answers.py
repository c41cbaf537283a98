"""Answers: extraction, normalisation and equivalence for math / multiple-choice problems.

Foundation module (no Ray, no vLLM, no stage imports): the engine's majority vote, trace
rows, curation's difficulty filter, the serve app and evaluation all read answers the same
way through it. Every public function is total: bad input gives None/False, never an
exception, because one odd generation must not kill a job.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading

__all__ = ["extract_answer", "is_equivalent", "normalize_answer", "grade", "MATH_VERIFY_TIMEOUT_S"]

# math_verify's timeouts are whole seconds (signal.alarm). Sympy can hang on
# e.g. 10^{10^{10^{10}}}, so every call is bounded.
MATH_VERIFY_TIMEOUT_S = 5
# Extracted answers are short; anything longer is junk not worth sympy time.
_MAX_VERIFY_CHARS = 1000

# ---------------------------------------------------------------- extraction
# `\b` stops `\boxedfoo`; a later `{` is brace-matched, not regex-matched,
# because regexes cannot balance `\boxed{\frac{1}{2}}`.
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_BRACE_RE = re.compile(r"(?<!\\)[{}]")  # `\{` `\}` are literal set braces
_TOKEN_RE = re.compile(r"[^\s${}]{1,100}")  # `\boxed 5` form; bounded on purpose
# Patterns are built so nothing after a `*` quantifier can fail (the capture
# `[^\n]*` always matches), so there is no catastrophic backtracking.
_LINE_RES = (
    re.compile(r"final\s+answer[ \t*]*(?::|is\b)[\s*:]*([^\n]*)", re.I),
    re.compile(r"\banswer[ \t*]*:[\s*]*([^\n]*)", re.I),
    re.compile(r"\bthe\s+answer\s+is\b[\s*:]*([^\n]*)", re.I),
)
_SENTENCE_END_RE = re.compile(r"\.\s")
# Option letters: "C", "(C)", "\text{(C)}", "\textbf{C}"; or "(C) 42" as a prefix.
_LETTER_FULL_RE = re.compile(r"(?:\\text(?:bf)?\{)?\(?([A-E])\)?\}?")
_LETTER_PREFIX_RE = re.compile(r"\(([A-E])\)(?=\s|$)")
_MC_RE = re.compile(r"\(?([A-Ea-e])\)?(?:[.:)]|$)")  # case-insensitive, for grading
_MAX_TRIES = 8
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _brace_matches(text: str, start: int) -> dict[int, int]:
    """Map each `{` at/after `start` to its matching `}` in one linear pass."""
    match, stack = {}, []
    for m in _BRACE_RE.finditer(text, start):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            match[stack.pop()] = m.start()
    return match


def _boxed(text: str) -> list[tuple[int, int, int]]:
    """(position, start, end) of the content of every balanced `\\boxed{}`.

    Spans, not slices: nested boxes would otherwise copy O(n^2) bytes.
    """
    hits = list(_BOX_RE.finditer(text))
    if not hits:
        return []
    match = _brace_matches(text, hits[0].end())
    out = []
    for h in hits:
        j = h.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            k = match.get(j)
            if k is not None:  # unbalanced -> not a candidate
                out.append((h.start(), j + 1, k))
        elif (t := _TOKEN_RE.match(text, j)) is not None and j > h.end():
            out.append((h.start(), t.start(), t.end()))
    return out


def _clean(s: str, cut_sentence: bool) -> str:
    # finditer cannot overlap, so "Final Answer: The final answer is $12$."
    # arrives whole; peel nested prefixes (bounded, to stay linear).
    for _ in range(3 if cut_sentence else 0):
        inner = [m for rx in _LINE_RES if (m := rx.search(s)) and m.group(1).strip()]
        if not inner:
            break
        s = max(inner, key=lambda m: m.start(1)).group(1)
    s = s.strip().strip("*").strip()
    if boxed := _boxed(s):  # "Final Answer: $\boxed{5}$" -> "5"
        s = s[boxed[-1][1] : boxed[-1][2]]
    else:
        for left, right in _DELIMS:
            if s.startswith(left):  # keep only the first math span: "$5$. I hope..."
                end = s.find(right, len(left))
                s = s[len(left) : end] if end != -1 else s[len(left) :]
                break
        else:
            if cut_sentence and (m := _SENTENCE_END_RE.search(s)):
                s = s[: m.start()]  # "42. Because ..." -> "42"; "3.5" is kept
    s = s.strip().rstrip(".").strip()
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s.strip("$").strip()
    if (m := _LETTER_FULL_RE.fullmatch(s) or _LETTER_PREFIX_RE.match(s)) is not None:
        return m.group(1)
    return s


def extract_answer(text: str) -> str | None:
    """Last answer candidate (by position) in a model output, or None."""
    try:
        if not isinstance(text, str) or not text:
            return None
        cands = [(pos, a, b, False) for pos, a, b in _boxed(text)]
        for rx in _LINE_RES:
            cands.extend((m.start(1), m.start(1), m.end(1), True) for m in rx.finditer(text))
        cands.sort(key=lambda c: c[0], reverse=True)
        # Ties (same span seen by two patterns) are harmless: same text.
        # Empty candidates fall back to earlier ones, but only a few times:
        # each try costs O(len), and `\boxed{\boxed{...}}` x 1e5 must stay linear.
        for _, a, b, is_line in cands[:_MAX_TRIES]:
            if ans := _clean(text[a:b], cut_sentence=is_line):
                return ans
        return None
    except Exception:  # defensive: extraction must never take down an eval
        return None


# ------------------------------------------------------------- normalisation
_NORM_SUBS = (
    (re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\(?:left|right)(?![A-Za-z])"), ""),  # but not \leftarrow
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\\[,;:! ]"), ""),  # LaTeX spacing commands
    (re.compile(r"\{,\}"), ","),  # 1{,}000
    (re.compile(r"\^\s*\{?\\circ\}?|°"), ""),
    (re.compile(r"\\[()\[\]]"), ""),  # \( \) \[ \] delimiters
    (re.compile(r"\s+"), ""),
    # Hendrycks-MATH shorthand: \frac12 -> \frac{1}{2}, \frac{a}2, \frac1{b}, \sqrt2 -> \sqrt{2}
    (re.compile(r"\\frac(\d)(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac(\d)\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac(\{[^{}]*\})(\d)"), r"\\frac\1{\2}"),
    (re.compile(r"\\sqrt(\d)"), r"\\sqrt{\1}"),
)
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+")
_INT_RE = re.compile(r"-?\d+")
_INTLIKE_RE = re.compile(r"-?\d+(?:\.0*)?")  # "33.0" is an integer answer too
_NORM_LETTER_RE = re.compile(r"\(([A-Ea-e])\)|([A-E])")


def _canon_int(s: str) -> str:
    # String ops, not int(): Python refuses int() on >4300-digit strings.
    neg, digits = s.startswith("-"), s.lstrip("-").lstrip("0") or "0"
    return "-" + digits if neg and digits != "0" else digits


def normalize_answer(ans: str) -> str:
    """Canonical string for grouping answers (majority voting). Cheap, no sympy."""
    try:
        s = "" if ans is None else str(ans).strip()
        if boxed := _boxed(s):
            s = s[boxed[-1][1] : boxed[-1][2]]
        s = s.replace("\\$", "").replace("$", "")
        for rx, rep in _NORM_SUBS:
            s = rx.sub(rep, s)
        s = s.rstrip(".")
        if _THOUSANDS_RE.fullmatch(s):
            s = s.replace(",", "")
        if _INT_RE.fullmatch(s):  # "033" -> "33" (AIME), "-0" -> "0"
            s = _canon_int(s)
        if (m := _NORM_LETTER_RE.fullmatch(s)) is not None:
            s = (m.group(1) or m.group(2)).upper()
        return s
    except Exception:
        return ""


# ----------------------------------------------------------------- grading
@functools.lru_cache(maxsize=1)
def _mv():
    # Lazy: keeps `import s1ray.answers` cheap for callers that only
    # extract/normalise, and lets signatures be inspected once.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException  # a BaseException subclass!

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    p_params = inspect.signature(parse).parameters
    v_params = inspect.signature(verify).parameters
    return parse, verify, configs, p_params, v_params, TimeoutException


def _timeout_kwargs(params, names=("parsing_timeout", "timeout_seconds")) -> dict:
    # math_verify times out with signal.alarm, which raises ValueError outside
    # the main thread (threaded Ray actors, serve replicas); there we must
    # pass None and rely on the caller's own deadline.
    t = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    return {n: t for n in names if n in params}


def _mv_parse(s: str) -> list:
    parse, _, configs, p_params, _, _ = _mv()
    s = s.strip().replace("\\$", "")  # "\$5": latex2sympy cannot parse it
    has_delims = "$" in s or "\\boxed" in s or "\\(" in s or "\\[" in s
    # Bare text is only seen by the Expr extractor, which misreads LaTeX
    # ("\frac12" -> nothing, "1+x^2" -> 1), hence the $...$ wrapping.
    attempts = [s] if has_delims else [f"${s}$"]
    if "$" in s:  # stray/unbalanced dollars: retry with them removed
        attempts.append("$" + s.replace("$", "") + "$")
    for a in attempts:
        res = parse(a, configs, **_timeout_kwargs(p_params))
        if res:
            return res
    return []


@functools.lru_cache(maxsize=8192)  # voting re-grades the same strings a lot
def _math_verify(prediction: str, gold: str) -> bool:
    _, verify, _, _, v_params, timeout_exc = _mv()
    try:
        if len(prediction) > _MAX_VERIFY_CHARS or len(gold) > _MAX_VERIFY_CHARS:
            return False
        g, p = _mv_parse(gold), _mv_parse(prediction)
        if not g or not p:
            return False
        # verify() is asymmetric: gold first (it may be an equation "x=3").
        return bool(verify(g, p, **_timeout_kwargs(v_params)))
    except (Exception, timeout_exc):
        return False


def is_equivalent(prediction: str, gold: str) -> bool:
    """True if prediction and gold denote the same answer. Never raises."""
    try:
        if prediction is None or gold is None:
            return False
        prediction, gold = str(prediction), str(gold)  # gold may be an int
        p, g = normalize_answer(prediction), normalize_answer(gold)
        if not p or not g:
            return False
        if len(g) == 1 and g in "ABCDE":  # multiple choice: letters only
            # Lower-case gold ("e") stays maths: it is Euler's number more often.
            m = _MC_RE.match(p)
            return m is not None and m.group(1).upper() == g
        if p == g:
            return True
        if _INT_RE.fullmatch(g) and _INTLIKE_RE.fullmatch(p):
            return _canon_int(p.split(".")[0]) == g  # AIME: no sympy needed
        return _math_verify(prediction.strip(), gold.strip())
    except Exception:
        return False


def grade(text: str, gold: str) -> tuple[str | None, bool]:
    """(extracted answer, correct?) for one model output."""
    ans = extract_answer(text)
    return ans, (is_equivalent(ans, gold) if ans is not None else False)
