"""Budget forcing in the sampler, the pure half: which requests it can take, the per-request
settings it gets, and one request's state. No vLLM import (the processor is
:mod:`s1ray.engine.inengine`); unit-tested against :class:`BudgetForcer` directly.
"""

from __future__ import annotations

import enum
import random
from typing import TYPE_CHECKING

from s1ray.engine.budget import BudgetForcer, FormatIds, Phase, ThinkingBudget, TokenCounts

if TYPE_CHECKING:
    from s1ray.engine.types import GenerationRequest

PAYLOAD_KEY = "s1ray_forcing"
SAMPLING_EPS = 1e-5  # vLLM's threshold below which a temperature means greedy
# Request fields the rounds backend handles that the processor cannot reproduce exactly.
# Checked by name so that a field added to GenerationRequest later falls back until supported.
ROUNDS_ONLY_FIELDS = ("stop", "logprobs", "top_logprobs", "top_k", "min_p", "presence_penalty",
                      "frequency_penalty", "repetition_penalty", "max_completion_tokens")


# -- choosing the backend ---------------------------------------------------------------
def _is_set(name: str, value) -> bool:
    if name == "repetition_penalty":
        return value not in (None, 1, 1.0)
    return value not in (None, False, 0, 0.0, "", [], (), {})


def in_engine_supports(req: "GenerationRequest", ids: FormatIds, temperature: float) -> str | None:
    """Why the in-engine backend would not be exact for this request, or None where it is.

    The one place that decides: every request feature the processor cannot reproduce token for
    token (greedy) or in distribution (sampling) must return a reason here, and goes to rounds.
    """
    for name in ROUNDS_ONLY_FIELDS:
        if _is_set(name, getattr(req, name, None)):
            return f"{name} is set"
    if temperature >= SAMPLING_EPS and req.top_p < 1:
        return "top_p < 1: the stop draw would need vLLM's top-p renormalisation"
    if any(len(t) != 1 for t in ids.end_triggers):
        return "a multi-token end trigger: its first tokens are sampled before the trigger is seen"
    if not ids.continuation:
        return "an empty continuation: the processor forces a continuation's ids, and there are none"
    trig = ids.single_token_triggers
    if not ids.answer_stop or not ids.answer_stop <= trig:
        return "an end-of-turn id that is not a single-token end trigger"
    if trig & set(ids.continuation) or ids.answer_stop & set(ids.thinking_end):
        return "the continuation holds an end trigger, or the end of thinking an end-of-turn id"
    if not trig & set(ids.thinking_end):
        return "the end-of-thinking ids hold no end trigger: the end of thinking is not visible in the output"
    return None


def forcing_payload(key: str, ids: FormatIds, budget: ThinkingBudget, temperature: float,
                    seed: int | None) -> dict:
    """``extra_args`` entry for one request (plain data: it crosses to the engine process)."""
    return {
        "key": key,
        "thinking_end": list(ids.thinking_end),
        "triggers": [t[0] for t in ids.end_triggers],
        "continuation": list(ids.continuation),
        "answer_stop": sorted(ids.answer_stop),
        "min_tokens": budget.min_tokens,
        "max_tokens": budget.max_tokens,
        "num_waits": budget.num_waits,
        "max_answer_tokens": budget.max_answer_tokens,
        "max_total_tokens": budget.max_total_tokens,
        "greedy": temperature < SAMPLING_EPS,
        "temperature": float(temperature),
        "seed": seed,
    }


def forcer_from_payload(p: dict) -> BudgetForcer:
    ids = FormatIds(
        thinking_end=tuple(p["thinking_end"]),
        end_triggers=tuple((t,) for t in p["triggers"]),
        continuation=tuple(p["continuation"]),
        answer_stop=frozenset(p["answer_stop"]),
    )
    budget = ThinkingBudget(p["min_tokens"], p["max_tokens"], p["num_waits"], p["max_answer_tokens"],
                            max_total_tokens=p.get("max_total_tokens"))
    forcer = BudgetForcer(ids, budget)
    forcer.start()
    return forcer


# -- one request's state (pure Python) --------------------------------------------------------------
def _seq_len(f: BudgetForcer) -> int:
    if f.phase is Phase.THINKING:
        return len(f.thinking_ids)
    return len(f.thinking_ids) + len(f.ids.thinking_end) + len(f.answer_ids)


def _seq_at(f: BudgetForcer, i: int) -> int:
    n = len(f.thinking_ids)
    if i < n:
        return f.thinking_ids[i]
    i -= n
    te = f.ids.thinking_end
    return te[i] if i < len(te) else f.answer_ids[i - len(te)]


class Action(enum.Enum):
    """What the processor does with a row at this step."""

    FORCE = "force"  # force ``ForcedRow.next_id``
    DECIDE = "decide"  # thinking: would the model end it now? (else its triggers are masked)
    AFTER_WAIT = "after_wait"  # the first id after a continuation: mask as min_tokens=1 does
    SAMPLE = "sample"  # the answer: the model samples freely


class ForcedRow:
    """One request in the batch: its forcer, its live output list and its stop-draw RNG.

    ``action`` (with ``next_id``) is what the current step asks of the row; it changes only at
    an event (an id forced, a stop, a cap, the answer), so a row thinking freely costs one
    :meth:`BudgetForcer.extend_thinking` per step and no other Python.
    """

    __slots__ = ("forcer", "out", "seen", "greedy", "temperature", "rng", "eot", "trigger_key", "triggers",
                 "after_wait_mask", "action", "next_id", "room")

    def __init__(self, payload: dict, out: list[int], stop_ids: set[int]):
        self.forcer = forcer_from_payload(payload)
        self.out = out  # vLLM's live list of this request's output ids
        self.seen = 0  # output ids accounted so far
        self.greedy = bool(payload["greedy"])
        self.temperature = float(payload["temperature"])
        seed = payload["seed"]
        # Its own stream, so vLLM's per-request sampling generator is left as it would be.
        self.rng = random.Random(None if seed is None else (int(seed) * 1_000_003) ^ 0x5BD1E995)
        self.eot = min(payload["answer_stop"])
        self.trigger_key = tuple(sorted(payload["triggers"]))
        self.triggers = frozenset(self.trigger_key)
        self.after_wait_mask = tuple(sorted(set(payload["triggers"]) | set(stop_ids)))
        self._settle()

    def _settle(self) -> None:
        """Work out ``action``, ``next_id`` and ``room`` (model ids that can only extend the
        thinking) from the forcer, after anything changed it."""
        f = self.forcer
        self.next_id, self.room = None, 0
        if f.phase is Phase.DONE:
            self.action, self.next_id = Action.FORCE, self.eot
        elif self.seen < _seq_len(f):
            self.action, self.next_id = Action.FORCE, _seq_at(f, self.seen)
        elif f.phase is Phase.ANSWER:
            self.action = Action.SAMPLE
        elif f.round_min_tokens():
            self.action = Action.AFTER_WAIT
        else:
            self.action, self.room = Action.DECIDE, f.thinking_room()

    def sync(self) -> None:
        """Account the ids vLLM appended since the last step."""
        out = self.out
        new = len(out) - self.seen
        if new <= 0:
            return
        if new <= self.room:  # free thinking: masked triggers, below the cap
            self.forcer.extend_thinking(out[self.seen :])
            self.seen += new
            self.room -= new
            return
        f = self.forcer
        while self.seen < len(out) and f.phase is not Phase.DONE:
            if self.seen >= _seq_len(f):  # beyond the sequence: the model sampled it
                f.feed(out[self.seen])
            self.seen += 1
        self.seen = len(out)
        self._settle()

    def pending(self) -> int | None:
        """The id to force at this step, if any."""
        return self.next_id

    def stop_thinking(self) -> int:
        """The model would end thinking here: the forcer drops the trigger and appends the
        continuation or the end of thinking; returns the first id to force."""
        self.forcer.feed(self.trigger_key[0])
        self._settle()
        assert self.next_id is not None
        return self.next_id


# -- the frontend's view of one request's output ------------------------------------------------------
class OutputSplitter(TokenCounts):
    """Splits one in-engine request's output ids into thinking and answer, as they arrive.

    Inside thinking the processor never lets an end trigger be sampled, so the first trigger id in
    the output is the one inside the forced end-of-thinking ids; the ids before it that belong to
    those (``holdback``) are held back until it is clear they are not thinking.
    """

    def __init__(self, ids: FormatIds, budget: ThinkingBudget):
        self.ids, self.budget = ids, budget
        self._trig = ids.single_token_triggers
        self.holdback = next(i for i, t in enumerate(ids.thinking_end) if t in self._trig)
        self.thinking_ids: list[int] = []
        self.answer_ids: list[int] = []
        self.phase = Phase.THINKING
        self.forced_end = False
        self.answer_finish: str | None = None
        self.num_waits = 0  # known only at the end (see may_hold_continuations)
        self._delim_left = 0

    def push(self, tok: int) -> None:
        if self.phase is Phase.THINKING:
            if tok in self._trig:
                del self.thinking_ids[len(self.thinking_ids) - self.holdback :]
                self.phase = Phase.ANSWER
                self._delim_left = len(self.ids.thinking_end) - self.holdback - 1
                cap = self.budget.thinking_cap
                self.forced_end = cap is not None and len(self.thinking_ids) >= cap
            else:
                self.thinking_ids.append(tok)
        elif self._delim_left:
            self._delim_left -= 1
        elif self.phase is Phase.ANSWER:
            if tok in self.ids.answer_stop:
                full = len(self.answer_ids) >= self.budget.answer_cap(len(self.thinking_ids))  # forced end of turn
                self.answer_finish = "length" if full else "stop"
                self.phase = Phase.DONE
            else:
                self.answer_ids.append(tok)

    def end(self) -> None:
        """The engine finished the request without an end-of-turn id (the context is full)."""
        if self.phase is Phase.THINKING:
            self.forced_end = True
        if self.answer_finish is None:
            self.answer_finish = "length"
        self.phase = Phase.DONE

    def final_thinking(self) -> int:
        """How many thinking ids are certain to stay thinking."""
        if self.phase is Phase.THINKING:
            return max(0, len(self.thinking_ids) - self.holdback)
        return len(self.thinking_ids)

    def may_hold_continuations(self) -> bool:
        """Whether the processor may have appended continuations (then only it knows how many:
        the model may write the same ids itself)."""
        if self.budget.min_tokens == 0 and self.budget.num_waits == 0:
            return False
        # its first id: a continuation cut short by the cap is that id alone
        return self.ids.continuation[0] in self.thinking_ids
