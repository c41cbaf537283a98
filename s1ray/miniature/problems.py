"""s1 in miniature: synthetic multi-step problems, a programmatic teacher and a weak solver.

Pure and seeded. Each domain is a small modular map applied k times to a start value; the
teacher's thinking writes one numbered step per application and the answer is the last value:

* ``affine3`` -- x -> 3x + 1 (mod 10): "Apply affine3 4 times to 7." thinking "1:7>2 2:2>7 3:7>2 4:2>7"
* ``affine7``, ``affine9`` -- x -> 7x + 3, 9x + 2 (mod 10)
* ``shift4``, ``shift7`` -- x -> x + 4, x + 7 (mod 10): running modular sums
* ``square`` -- x -> x^2 + 1 (mod 10)

6 maps x 12 step counts x 10 start values = 720 distinct problems, one in five held out.

Every step depends only on the previous value (a 10-entry table a tiny model can learn) and the
step counter says when to stop, so the answer is only known once thinking has run all k steps:
cutting thinking short (a small budget) really costs accuracy -- which is what makes the
miniature's accuracy-vs-budget curve rise for real. Difficulty = k.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass

@dataclass(frozen=True)
class Problem:
    id: str
    source: str  # the domain, as s1's "source" column
    question: str
    answer: str
    steps: int

    def to_row(self) -> dict:
        return {**asdict(self), "solution": "", "metadata": {"steps": self.steps}}


MAPS = {
    "affine3": lambda x: (3 * x + 1) % 10,
    "affine7": lambda x: (7 * x + 3) % 10,
    "affine9": lambda x: (9 * x + 2) % 10,
    "shift4": lambda x: (x + 4) % 10,
    "shift7": lambda x: (x + 7) % 10,
    "square": lambda x: (x * x + 1) % 10,
}
DOMAINS = tuple(MAPS)


def _apply(domain: str, start: int, steps: int) -> tuple[str, list[str], str]:
    f, x, lines = MAPS[domain], start, []
    for i in range(1, steps + 1):
        y = f(x)
        lines.append(f"{i}:{x}>{y}")
        x = y
    return f"Apply {domain} {steps} times to {start}.", lines, str(x)


def is_heldout(domain: str, steps: int, start: int) -> bool:
    """One problem in five is reserved for evaluation: never in a training pool, whatever
    curation then selects (a stable hash, so pools of any size and seed agree)."""
    return zlib.crc32(f"{domain}|{steps}|{start}".encode()) % 5 == 0


def make_pool(n: int, seed: int = 0, max_steps: int = 12) -> list[Problem]:
    """``n`` training problems spread over the domains, 1..max_steps steps, start values 0..9
    (held-out problems excluded)."""
    rng = random.Random(seed)
    out = []
    i = 0
    while len(out) < n:
        domain = DOMAINS[i % len(DOMAINS)]
        steps, start = rng.randint(1, max_steps), rng.randint(0, 9)
        i += 1
        if is_heldout(domain, steps, start):
            continue
        q, _, ans = _apply(domain, start, steps)
        out.append(Problem(id=f"mini-{seed}-{len(out):06d}", source=domain, question=q, answer=ans, steps=steps))
    return out


def teacher_trace(problem: Problem, self_check: float = 0.0) -> dict:
    """The programmatic teacher: step-by-step thinking and an attempt, as a trace row.

    With ``self_check`` > 0 the teacher checks itself the way s1K's traces do, each of two
    habits with that probability (seeded by the problem's id, so a pool's traces are fixed):

    * a step re-checked after "Wait": ``3:7>2\nWait 3:7>2`` -- on the last step too;
    * an early stop corrected: ``2:2>7 so 7.\nWait 3:7>2 ...`` -- a premature conclusion, then the
      remaining steps, so "Wait" comes to mean "the work is not done yet".

    "Wait" opens a line, as in s1K's traces, and that is also where budget forcing puts it: a
    suppressed end leaves the model's "\n" (the s1 delimiter's lead) and appends "Wait" after it.

    The answer is always the right one: the checks only lengthen the thinking.
    """
    _, lines, ans = _replay(problem)
    thinking = self_checked(lines, random.Random(zlib.crc32(problem.id.encode())), self_check)
    return {"id": problem.id, "thinking": thinking, "attempt": ans, "error": None}


def self_checked(lines: list[str], rng: random.Random, rate: float) -> str:
    """``lines`` (one "i:x>y" per step) joined, with the self-checks of :func:`teacher_trace`."""
    k = len(lines)
    after: dict[int, str] = {}
    if rate > 0 and rng.random() < rate:
        i = rng.randint(1, k)
        after[i] = f"\nWait {lines[i - 1]}"
    if rate > 0 and k >= 2 and rng.random() < rate:
        j = rng.randint(1, k - 1)
        after[j] = after.get(j, "") + f" so {lines[j - 1].rsplit('>', 1)[1]}.\nWait"
    return " ".join(line + after.get(n, "") for n, line in enumerate(lines, 1))


def _replay(problem: Problem) -> tuple[str, list[str], str]:
    # The question states domain, steps and start: regenerate the working from it.
    start = int(problem.question.rsplit(" ", 1)[1].rstrip("."))
    return _apply(problem.source, start, problem.steps)


def heldout_problems(max_steps: int = 12) -> list[Problem]:
    """Every held-out problem once (see :func:`is_heldout`)."""
    out = []
    for domain in DOMAINS:
        for steps in range(1, max_steps + 1):
            for start in range(10):
                if not is_heldout(domain, steps, start):
                    continue
                q, _, ans = _apply(domain, start, steps)
                out.append(Problem(id=f"mini-all-{domain}-{steps}-{start}", source=domain, question=q,
                                   answer=ans, steps=steps))
    return out


def weak_solver(problem: Problem) -> str | None:
    """A reference "solver model" that only gets short problems right (s1's difficulty filter
    drops questions a solver solves)."""
    return problem.answer if problem.steps <= 2 else None
