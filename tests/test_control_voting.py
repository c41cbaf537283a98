"""Control-method plans and majority voting: pure functions."""

import pytest

from s1ray.engine.budget import BudgetError, ThinkingBudget
from s1ray.engine.control import METHODS, plan_control, within_bounds
from s1ray.engine.voting import majority_vote


def test_budget_forcing_enforces_the_budget_itself():
    b = ThinkingBudget(10, 100)
    p = plan_control("budget_forcing", b)
    assert p.budget == b and p.prompt_suffix == "" and not p.resample


@pytest.mark.parametrize("method", ["token_conditional", "step_conditional", "class_conditional"])
def test_prompt_methods_state_the_budget_but_do_not_enforce(method):
    p = plan_control(method, ThinkingBudget(0, 400, max_answer_tokens=9))
    assert p.budget.max_tokens is None and p.budget.min_tokens == 0
    assert p.budget.max_answer_tokens == 9
    assert p.bounds == (0, 400)
    assert p.prompt_suffix


@pytest.mark.parametrize("method", ["token_conditional_bf", "step_conditional_bf"])
def test_bf_variants_state_the_budget_and_enforce_it(method):
    b = ThinkingBudget(0, 400, max_answer_tokens=9)
    p = plan_control(method, b)
    prompt_only = plan_control(method.removesuffix("_bf"), b)
    assert p.budget == b and p.bounds == (0, 400)
    assert p.prompt_suffix == prompt_only.prompt_suffix and not p.resample


def test_prompt_texts():
    assert "400 tokens" in plan_control("token_conditional", ThinkingBudget(0, 400)).prompt_suffix
    assert "4 steps" in plan_control("step_conditional", ThinkingBudget(0, 400)).prompt_suffix
    assert "3 steps left" in plan_control("step_conditional", ThinkingBudget(0, 400)).prompt_suffix
    assert "briefly" in plan_control("class_conditional", ThinkingBudget(0, 400)).prompt_suffix
    assert "carefully" in plan_control("class_conditional", ThinkingBudget(0, 8000)).prompt_suffix
    assert "carefully" in plan_control("class_conditional", ThinkingBudget(0, 400), "long").prompt_suffix


def test_rejection_sampling_needs_a_cap():
    assert plan_control("rejection_sampling", ThinkingBudget(0, 50)).resample
    with pytest.raises(BudgetError, match="max_thinking_tokens"):
        plan_control("rejection_sampling", ThinkingBudget())
    with pytest.raises(BudgetError, match="method"):
        plan_control("beam_search", ThinkingBudget())
    with pytest.raises(BudgetError, match="thinking_class"):
        plan_control("class_conditional", ThinkingBudget(0, 9), "medium")
    assert len(METHODS) == 8


def test_within_bounds():
    assert within_bounds(5, (0, 5)) and within_bounds(5, (5, None))
    assert not within_bounds(6, (0, 5)) and not within_bounds(4, (5, 10))


def test_vote_groups_equivalent_forms_and_reports_distribution():
    v = majority_vote(["$\\frac{1}{2}$", "3", "\\dfrac{1}{2}", None, "3", "\\boxed{\\frac12}"])
    assert v.num_votes == 5
    assert v.distribution[list(v.distribution)[0]] == 3
    assert v.answer == "$\\frac{1}{2}$" and v.winner_index == 0
    assert sum(v.distribution.values()) == 5


def test_vote_ties_go_to_the_first_seen():
    assert majority_vote(["7", "8", "8", "7"]).answer == "7"
    assert majority_vote(["8", "7", "7", "8"]).answer == "8"
    assert majority_vote(["033", "33", "5"]).answer == "033"  # AIME-style leading zero groups


def test_vote_with_no_answers():
    v = majority_vote([None, None])
    assert v.answer is None and v.distribution == {} and v.num_votes == 0
