"""Turning a request into token ids and checking it fits -- everything before the engine.

Needs only the tokenizer, so the CLI and the Serve app refuse a bad request (with the field
named) before a vLLM engine is started or a round is scheduled.
"""

from __future__ import annotations

from s1ray.engine.budget import BudgetError, FormatIds, ThinkingBudget
from s1ray.engine.control import ControlPlan, plan_control
from s1ray.engine.types import EngineConfig, GenerationRequest
from s1ray.formats import ReasoningFormat, get_format, open_thinking, render_prompt, single_token_ids


def tokenize_format(tokenizer, fmt: ReasoningFormat, continuation: str | None = None) -> FormatIds:
    """Tokenize a format's delimiters once; the engine works on these ids from then on."""

    def enc(s: str) -> tuple[int, ...]:
        return tuple(tokenizer.encode(s, add_special_tokens=False))

    return FormatIds(
        thinking_end=enc(fmt.thinking_end + (fmt.answer_prefix or "")),
        end_triggers=tuple(enc(t) for t in fmt.end_triggers),
        continuation=enc(continuation if continuation is not None else fmt.continuation),
        answer_stop=single_token_ids(tokenizer, fmt.answer_stop),
    )


class RequestPlanner:
    def __init__(self, tokenizer, fmt: ReasoningFormat, max_model_len: int):
        self.tokenizer = tokenizer
        self.format = fmt  # the engine's default; a request may name another
        self.max_model_len = max_model_len
        self.format_ids = tokenize_format(tokenizer, fmt)
        self._ids_cache: dict[tuple[str, str | None], FormatIds] = {(fmt.name, None): self.format_ids}

    def format_for(self, req: GenerationRequest) -> ReasoningFormat:
        return get_format(req.format) if req.format else self.format

    def ids_for(self, fmt: ReasoningFormat, continuation: str | None) -> FormatIds:
        key = (fmt.name, continuation)
        if key not in self._ids_cache:
            self._ids_cache[key] = tokenize_format(self.tokenizer, fmt, continuation)
        return self._ids_cache[key]

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> "RequestPlanner":
        from transformers import AutoTokenizer

        from s1ray.dataio import local_copy

        tok = AutoTokenizer.from_pretrained(local_copy(cfg.tokenizer or cfg.model))
        return cls(tok, get_format(cfg.format), cfg.max_model_len)

    def prompt_ids(self, req: GenerationRequest, suffix: str = "") -> list[int]:
        """Chat template (or raw text, or token ids) + the control method's suffix + start of thinking."""
        start = self.format_for(req).thinking_start
        if req.prompt_token_ids is not None:
            return self._token_prompt(req.prompt_token_ids, suffix, start)
        if req.messages is not None:
            msgs = [dict(m) for m in req.messages]
            user = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
            if not user:
                raise BudgetError("messages", "needs at least one user message")
            msgs[user[-1]]["content"] += suffix
            text = render_prompt(self.tokenizer, msgs, start)
        else:
            text = open_thinking(req.prompt + suffix, start)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _token_prompt(self, ids: list[int], suffix: str, start: str) -> list[int]:
        vocab = len(self.tokenizer)
        bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise BudgetError("prompt", f"token ids must be in [0, {vocab}), got {bad[:5]}")
        enc = lambda s: self.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        out = list(ids) + (enc(suffix) if suffix else [])
        start_ids = enc(start)
        if out[-len(start_ids):] != start_ids:
            out += start_ids
        return out

    def check_fits(self, prompt_len: int, budget: ThinkingBudget, delim: int = 0) -> None:
        """Refuse a request whose prompt + budgets cannot fit the model's context."""
        limit = self.max_model_len
        if prompt_len >= limit:
            raise BudgetError("prompt", f"is {prompt_len} tokens; the model's context is {limit}")
        cap = budget.thinking_cap
        thinking = cap if cap is not None else budget.min_tokens
        answer = budget.answer_cap(thinking)
        need = prompt_len + thinking + delim + answer
        if need > limit:
            if budget.max_total_tokens is not None:
                name = "max_total_tokens"
            else:
                name = "max_thinking_tokens" if budget.max_tokens is not None else "min_thinking_tokens"
            raise BudgetError(
                name,
                f"prompt ({prompt_len}) + thinking ({thinking}) + delimiter ({delim}) + "
                f"answer ({answer}) = {need} exceeds the context of {limit}",
            )

    def prepare(self, req: GenerationRequest) -> tuple[ControlPlan, list[int], FormatIds]:
        plan = plan_control(req.method, req.budget, req.thinking_class)
        vocab = len(self.tokenizer)
        if req.logit_bias and any(not 0 <= t < vocab for t in req.logit_bias):
            raise BudgetError("logit_bias", f"token ids must be in [0, {vocab})")
        ids = self.ids_for(self.format_for(req), req.continuation)
        prompt = self.prompt_ids(req, plan.prompt_suffix)
        # A prompt-only method's own bound must fit too, though it is not enforced.
        self.check_fits(len(prompt), req.budget, len(ids.thinking_end))
        return plan, prompt, ids
