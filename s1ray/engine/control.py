"""Test-time control methods (s1 paper, Table 3): pure prompt and budget logic, no engine.

* ``budget_forcing`` -- decode-time control by :class:`~s1ray.engine.budget.BudgetForcer`.
* ``token_conditional`` -- the prompt states the thinking-token limit; nothing is enforced.
* ``step_conditional`` -- the prompt states a number of ~100-token steps with "steps left" markers.
* ``token_conditional_bf`` / ``step_conditional_bf`` -- the same prompts, with the stated budget
  enforced by budget forcing (the paper's "+ BF" rows).
* ``class_conditional`` -- a generic "think briefly" / "think carefully" instruction.
* ``rejection_sampling`` -- sample (temperature > 0) until the thinking length fits the budget.
* ``none`` -- no control: think until the model stops (or the context ends).

The prompt-based methods and rejection sampling are not enforced while decoding, so their
Control (share of runs inside the bounds) is what evaluation measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from s1ray.engine.budget import BudgetError, ThinkingBudget

METHODS = (
    "budget_forcing",
    "token_conditional",
    "step_conditional",
    "token_conditional_bf",
    "step_conditional_bf",
    "class_conditional",
    "rejection_sampling",
    "none",
)
STEP_TOKENS = 100  # the paper's step size
# At or below this many thinking tokens, class-conditional control asks for brief thinking.
SHORT_CLASS_MAX_TOKENS = 1024

CLASS_PROMPTS = {
    "short": "Think briefly: reason only as much as needed, then answer.",
    "long": "Think carefully and thoroughly: check your reasoning step by step before answering.",
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise BudgetError("method", f"unknown control method {method!r}; expected one of {list(METHODS)}")
    return method


@dataclass(frozen=True)
class ControlPlan:
    """What the engine does for one request under a method."""

    prompt_suffix: str  # appended to the user's question ("" for none)
    budget: ThinkingBudget  # what the state machine enforces
    bounds: tuple[int, int | None]  # the method's own budget bounds, for Control
    resample: bool = False  # rejection sampling


def plan_control(
    method: str, budget: ThinkingBudget, thinking_class: str | None = None
) -> ControlPlan:
    """Translate (method, requested budget) into prompt text and the enforced budget."""
    check_method(method)
    bounds = (budget.min_tokens, budget.max_tokens)
    # Nothing enforced on thinking, but the total bound is the client's hard limit on tokens.
    free = ThinkingBudget(max_answer_tokens=budget.max_answer_tokens, max_total_tokens=budget.max_total_tokens)
    if method == "budget_forcing":
        return ControlPlan("", budget, bounds)
    if method == "none":
        return ControlPlan("", free, bounds)
    if method == "rejection_sampling":
        if budget.max_tokens is None:
            raise BudgetError("max_thinking_tokens", "rejection_sampling needs a maximum budget")
        return ControlPlan("", free, bounds, resample=True)
    if method == "class_conditional":
        cls = thinking_class or (
            "short" if budget.max_tokens is not None and budget.max_tokens <= SHORT_CLASS_MAX_TOKENS else "long"
        )
        if cls not in CLASS_PROMPTS:
            raise BudgetError("thinking_class", f"expected 'short' or 'long', got {cls!r}")
        return ControlPlan("\n\n" + CLASS_PROMPTS[cls], free, bounds)
    if budget.max_tokens is None:
        raise BudgetError("max_thinking_tokens", f"{method} needs a maximum budget to state in the prompt")
    # The "+ BF" variants state the budget in the prompt and enforce it as budget forcing does.
    enforced = budget if method.endswith("_bf") else free
    if method.startswith("token_conditional"):
        return ControlPlan(f"\n\nThink for up to {budget.max_tokens} tokens.", enforced, bounds)
    steps = max(1, math.ceil(budget.max_tokens / STEP_TOKENS))
    return ControlPlan(
        f"\n\nThink for up to {steps} steps of about {STEP_TOKENS} tokens each. "
        f"After each step, write how many steps are left, e.g. '{steps - 1} steps left'.",
        enforced,
        bounds,
    )


def within_bounds(thinking_tokens: int, bounds: tuple[int, int | None]) -> bool:
    """Control's test: did a run's thinking length land within the method's bounds?"""
    lo, hi = bounds
    return thinking_tokens >= lo and (hi is None or thinking_tokens <= hi)
