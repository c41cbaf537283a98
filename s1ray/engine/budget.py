"""The budget-forcing state machine: pure, token-id based, no Ray or vLLM import.

The engine feeds it every token id the model generates; it answers with a :class:`Signal`:

* ``CONTINUE`` -- keep decoding the current engine request.
* ``RESTART`` -- the machine changed the sequence (it dropped an end-of-thinking trigger and
  appended the continuation "Wait", or it forced the end of thinking and appended the
  end-of-thinking delimiter + answer prefix). The current engine request must end and a new
  one start from ``prompt_ids + forcer.sequence`` (prefix caching makes that cheap).
* ``DONE`` -- the answer ended (end-of-turn token or answer cap).

Rules (s1's budget forcing, made exact by counting ids):

* Thinking tokens are the ids between the start of thinking and its end: model tokens plus
  injected continuation tokens, never the delimiters themselves.
* The model "tries to stop thinking" when the thinking ends with one of the format's end
  triggers (a token-id sequence; it may span several tokens). If fewer than ``min_tokens``
  thinking tokens exist, or fewer than ``num_waits`` continuations were appended, the trigger
  is dropped and the continuation is appended; otherwise thinking ends there.
* When thinking reaches ``max_tokens`` it ends: the delimiter (+ answer prefix) is appended.
  A continuation is truncated to fit under the cap, so ``min <= thinking <= max`` always holds
  whenever the engine keeps generating (Control = 100% by construction).
* The answer has its own cap, ``max_answer_tokens``.
* ``max_total_tokens`` (OpenAI's ``max_tokens``) bounds thinking + answer together. The answer
  keeps a reserve of ``min(max_answer_tokens, ceil(max_total_tokens / 2))`` tokens: thinking
  ends (forced, as at the cap) at ``max_total_tokens - reserve`` if the thinking cap is not
  lower, and the answer may then use ``min(max_answer_tokens, max_total_tokens - thinking)``.
  So every answer gets at least one token, and a small total bound splits about evenly
  instead of being spent on thinking that never reaches an answer.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field


class BudgetError(ValueError):
    """A budget parameter is invalid; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def _check_int(name: str, value: object, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    # bool is an int subclass, but True as a budget is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BudgetError(name, f"must be an integer, got {value!r}")
    if value < 0:
        raise BudgetError(name, f"must be >= 0, got {value}")


@dataclass(frozen=True)
class ThinkingBudget:
    """Per-request thinking control. ``max_tokens=None`` means no cap but the context."""

    min_tokens: int = 0
    max_tokens: int | None = None
    num_waits: int = 0
    max_answer_tokens: int = 512
    max_total_tokens: int | None = None  # thinking + answer (OpenAI's max_tokens)

    def __post_init__(self) -> None:
        _check_int("min_thinking_tokens", self.min_tokens)
        _check_int("max_thinking_tokens", self.max_tokens, allow_none=True)
        _check_int("num_waits", self.num_waits)
        _check_int("max_answer_tokens", self.max_answer_tokens)
        _check_int("max_total_tokens", self.max_total_tokens, allow_none=True)
        if self.max_answer_tokens < 1:
            raise BudgetError("max_answer_tokens", "must be >= 1")
        if self.max_total_tokens is not None and self.max_total_tokens < 1:
            raise BudgetError("max_total_tokens", "must be >= 1")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise BudgetError(
                "min_thinking_tokens",
                f"must be <= max_thinking_tokens ({self.min_tokens} > {self.max_tokens})",
            )
        cap = self.thinking_cap
        if cap is not None and self.max_total_tokens is not None and self.min_tokens > cap:
            raise BudgetError(
                "min_thinking_tokens",
                f"must be <= {cap}: max_total_tokens ({self.max_total_tokens}) keeps {self.answer_reserve} "
                f"tokens for the answer ({self.min_tokens} > {cap})",
            )

    @property
    def answer_reserve(self) -> int:
        """Tokens of ``max_total_tokens`` kept for the answer (0 without a total bound)."""
        if self.max_total_tokens is None:
            return 0
        return min(self.max_answer_tokens, (self.max_total_tokens + 1) // 2)

    @property
    def thinking_cap(self) -> int | None:
        """Where thinking is forced to end: the thinking cap or the total bound's share."""
        if self.max_total_tokens is None:
            return self.max_tokens
        room = self.max_total_tokens - self.answer_reserve
        return room if self.max_tokens is None else min(self.max_tokens, room)

    def answer_cap(self, thinking_tokens: int) -> int:
        """The answer's cap once thinking used ``thinking_tokens``."""
        if self.max_total_tokens is None:
            return self.max_answer_tokens
        return min(self.max_answer_tokens, self.max_total_tokens - thinking_tokens)


@dataclass(frozen=True)
class FormatIds:
    """A reasoning format, tokenized once with the model's tokenizer."""

    thinking_end: tuple[int, ...]  # delimiter + answer prefix, appended at the end of thinking
    end_triggers: tuple[tuple[int, ...], ...]  # sequences meaning "the model stops thinking"
    continuation: tuple[int, ...]  # "Wait"; empty: a suppressed end appends nothing
    answer_stop: frozenset[int]  # end-of-turn ids

    def __post_init__(self) -> None:
        if not self.end_triggers or any(not t for t in self.end_triggers):
            raise BudgetError("end_triggers", "each trigger must tokenize to at least one token")

    @property
    def single_token_triggers(self) -> frozenset[int]:
        """Triggers the engine can stop on by itself (``stop_token_ids``)."""
        return frozenset(t[0] for t in self.end_triggers if len(t) == 1)

    @functools.cached_property
    def trigger_ends(self) -> frozenset[int]:
        """The last id of each end trigger: a sequence that ends in none of them ends no trigger."""
        return frozenset(t[-1] for t in self.end_triggers)

    @property
    def delimiter_lead(self) -> tuple[int, ...]:
        """The ids of ``thinking_end`` before its first single-token trigger: s1's "\n" in
        "\n<|im_start|>answer\n". A model trained on the format writes them before the trigger."""
        trig = self.single_token_triggers
        i = next((k for k, t in enumerate(self.thinking_end) if t in trig), None)
        return self.thinking_end[:i] if i else ()


class Phase(enum.Enum):
    THINKING = "thinking"
    ANSWER = "answer"
    DONE = "done"


class Signal(enum.Enum):
    CONTINUE = "continue"
    RESTART = "restart"
    DONE = "done"


class TokenCounts:
    """``thinking_tokens`` / ``answer_tokens`` of a state holding ``thinking_ids`` and ``answer_ids``
    (the forcer, and the in-engine backend's output splitter)."""

    @property
    def thinking_tokens(self) -> int:
        return len(self.thinking_ids)  # type: ignore[attr-defined]

    @property
    def answer_tokens(self) -> int:
        return len(self.answer_ids)  # type: ignore[attr-defined]


@dataclass
class BudgetForcer(TokenCounts):
    """One request's budget-forcing state. Create, call :meth:`start`, then :meth:`feed`."""

    ids: FormatIds
    budget: ThinkingBudget
    thinking_ids: list[int] = field(default_factory=list)
    answer_ids: list[int] = field(default_factory=list)
    num_waits: int = 0
    forced_end: bool = False
    phase: Phase = Phase.THINKING
    answer_finish: str | None = None  # "stop" or "length" once DONE
    # Index in thinking_ids where the model's current uninterrupted run starts: a trigger must
    # lie wholly inside model output, never straddle an injected continuation.
    _run_start: int = 0
    _just_continued: bool = False

    # -- driving -----------------------------------------------------------------------------
    def start(self) -> Signal:
        """Before any generation: a zero cap ends thinking at once."""
        if self.budget.thinking_cap == 0:
            self._end_thinking(forced=True)
            return Signal.RESTART
        return Signal.CONTINUE

    def feed(self, token_id: int) -> Signal:
        """Account one generated token id."""
        if self.phase is Phase.THINKING:
            return self._feed_thinking(token_id)
        if self.phase is Phase.ANSWER:
            return self._feed_answer(token_id)
        raise RuntimeError("feed() after DONE")

    def stop(self) -> Signal:
        """The answer reached one of the request's stop strings (the engine matches text)."""
        if self.phase is Phase.THINKING:
            raise RuntimeError("stop() while thinking: stop strings apply to the answer")
        self._finish("stop")
        return Signal.DONE

    def end_of_round(self) -> Signal:
        """The engine ended the request without this machine asking (length/context limit)."""
        if self.phase is Phase.THINKING:
            self._end_thinking(forced=True)
            return Signal.RESTART
        if self.phase is Phase.ANSWER:
            self._finish("length")
        return Signal.DONE

    # -- what the engine needs for the next request ---------------------------------------------
    @property
    def sequence(self) -> list[int]:
        """Everything after the prompt: thinking, delimiter/prefix (once ended), answer."""
        if self.phase is Phase.THINKING:
            return list(self.thinking_ids)
        return self.thinking_ids + list(self.ids.thinking_end) + self.answer_ids

    def round_max_tokens(self) -> int:
        """How many tokens the next engine request may generate (exact alignment with caps)."""
        if self.phase is Phase.THINKING:
            cap = self.budget.thinking_cap
            if cap is None:
                return 1 << 30  # the engine clips to the context
            return cap - len(self.thinking_ids)
        return self._answer_cap() - len(self.answer_ids)

    def round_stop_ids(self) -> list[int]:
        if self.phase is Phase.THINKING:
            return sorted(self.ids.single_token_triggers)
        return sorted(self.ids.answer_stop)

    def round_min_tokens(self) -> int:
        """After a continuation the model must write at least one token (as s1 does)."""
        return 1 if (self.phase is Phase.THINKING and self._just_continued) else 0

    # -- the in-engine processor's per-step shortcut -------------------------------------------
    def thinking_room(self) -> int:
        """How many more model ids :meth:`feed` takes as plain thinking before the cap acts (the
        id that reaches the cap is an event); 0 outside thinking, ``1 << 30`` without a cap."""
        if self.phase is not Phase.THINKING:
            return 0
        cap = self.budget.thinking_cap
        return 1 << 30 if cap is None else max(0, cap - len(self.thinking_ids) - 1)

    def extend_thinking(self, token_ids: list[int]) -> None:
        """``feed`` each id, for at most :meth:`thinking_room` ids that the caller knows end no
        trigger (the in-engine processor masks its single-token triggers): the same state,
        without the per-id trigger and cap checks."""
        if token_ids:
            self._just_continued = False
            self.thinking_ids.extend(token_ids)

    # -- internals ---------------------------------------------------------------------------
    def _feed_thinking(self, token_id: int) -> Signal:
        self._just_continued = False
        self.thinking_ids.append(token_id)
        trigger = self._matched_trigger()
        if trigger is not None:
            del self.thinking_ids[len(self.thinking_ids) - len(trigger) :]
            if self._must_continue():
                self._continue()
            else:
                self._drop_delimiter_lead()
                self._end_thinking(forced=False)
            return Signal.RESTART
        if self._at_cap():
            self._end_thinking(forced=True)
            return Signal.RESTART
        return Signal.CONTINUE

    def _feed_answer(self, token_id: int) -> Signal:
        if token_id in self.ids.answer_stop:
            self._finish("stop")
            return Signal.DONE
        self.answer_ids.append(token_id)
        if len(self.answer_ids) >= self._answer_cap():
            self._finish("length")
            return Signal.DONE
        return Signal.CONTINUE

    def _matched_trigger(self) -> tuple[int, ...] | None:
        if self.thinking_ids[-1] not in self.ids.trigger_ends:  # the common case, one set lookup
            return None
        run = len(self.thinking_ids) - self._run_start
        for trig in self.ids.end_triggers:
            n = len(trig)
            if n <= run and tuple(self.thinking_ids[-n:]) == trig:
                return trig
        return None

    def _must_continue(self) -> bool:
        return (
            len(self.thinking_ids) < self.budget.min_tokens or self.num_waits < self.budget.num_waits
        ) and not self._at_cap()

    def _at_cap(self) -> bool:
        cap = self.budget.thinking_cap
        return cap is not None and len(self.thinking_ids) >= cap

    def _answer_cap(self) -> int:
        return self.budget.answer_cap(len(self.thinking_ids))

    def _continue(self) -> None:
        cont = self.ids.continuation
        cap = self.budget.thinking_cap
        if cap is not None:
            cont = cont[: cap - len(self.thinking_ids)]
        self.thinking_ids.extend(cont)
        self.num_waits += 1
        self._run_start = len(self.thinking_ids)
        self._just_continued = True
        if self._at_cap():
            self._end_thinking(forced=True)

    def _drop_delimiter_lead(self) -> None:
        """At a natural end, ids the model wrote as the delimiter's lead are the delimiter, not
        thinking: the sequence is then exactly the format's (one "\n", not two, before
        ``<|im_start|>answer``), as in the data the model was trained on."""
        lead = self.ids.delimiter_lead
        n = len(lead)
        if n and len(self.thinking_ids) - self._run_start >= n and tuple(self.thinking_ids[-n:]) == lead:
            del self.thinking_ids[-n:]

    def _end_thinking(self, forced: bool) -> None:
        self.forced_end = forced
        self.phase = Phase.ANSWER

    def _finish(self, reason: str) -> None:
        self.answer_finish = reason
        self.phase = Phase.DONE
