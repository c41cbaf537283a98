"""The budget-forcing state machine, driven by scripted token sequences (no engine)."""

import pytest

from s1ray.engine.budget import BudgetError, BudgetForcer, FormatIds, Phase, Signal, ThinkingBudget

END = 50  # single-token end-of-thinking trigger (like <|im_start|>)
MULTI = (60, 61, 62)  # a trigger spanning three tokens (like "</" "think" ">")
WAIT = (70, 71)  # a two-token continuation
DELIM = (90, 91)  # delimiter + answer prefix
EOT = 99  # end of turn
IDS = FormatIds(thinking_end=DELIM, end_triggers=((END,), MULTI), continuation=WAIT, answer_stop=frozenset({EOT}))


class Script:
    """Drives a forcer the way the engine does: feed tokens; on RESTART a new round begins
    (the 'model' keeps producing from its script). Records the prompt suffix of every round."""

    def __init__(self, budget: ThinkingBudget, ids: FormatIds = IDS):
        self.f = BudgetForcer(ids, budget)
        self.rounds = [list(self.f.sequence)]
        self.f.start()

    def run(self, tokens):
        for t in tokens:
            if self.f.phase is Phase.DONE:
                break
            sig = self.f.feed(t)
            if sig is Signal.RESTART:
                self.rounds.append(list(self.f.sequence))
        return self.f


def test_no_budget_natural_end():
    f = Script(ThinkingBudget()).run([1, 2, 3, END, 7, 8, EOT])
    assert f.thinking_ids == [1, 2, 3]
    assert f.answer_ids == [7, 8]
    assert not f.forced_end and f.num_waits == 0
    assert f.answer_finish == "stop"
    assert f.sequence == [1, 2, 3, *DELIM, 7, 8]


def test_cap_forces_end_exactly():
    s = Script(ThinkingBudget(max_tokens=4))
    f = s.run([1, 2, 3, 4, 5, 6, EOT])
    # 4 thinking tokens, then delimiter; tokens 5, 6 are now the answer.
    assert f.thinking_ids == [1, 2, 3, 4]
    assert f.forced_end
    assert f.answer_ids == [5, 6]
    assert s.rounds[1] == [1, 2, 3, 4, *DELIM]


def test_round_limits_align_with_cap():
    f = BudgetForcer(IDS, ThinkingBudget(max_tokens=10, max_answer_tokens=3))
    f.start()
    assert f.round_max_tokens() == 10
    assert f.round_stop_ids() == [END]  # the multi-token trigger is caught in the stream
    for t in (1, 2, 3):
        f.feed(t)
    assert f.round_max_tokens() == 7


def test_minimum_appends_wait_and_drops_delimiter():
    s = Script(ThinkingBudget(min_tokens=6))
    f = s.run([1, 2, END, 3, END, 4, END, 8, EOT])
    # 1 2 [END dropped] Wait(2) -> 4 tokens; 3 -> 5 < 6: [END dropped] Wait -> 7; 4; END ends.
    assert f.thinking_ids == [1, 2, *WAIT, 3, *WAIT, 4]
    assert f.answer_ids == [8]
    assert f.num_waits == 2
    assert not f.forced_end
    assert f.thinking_tokens >= 6
    assert s.rounds[1] == [1, 2, *WAIT]  # the next round continues after "Wait"


def test_min_tokens_after_wait_requires_one_model_token():
    f = BudgetForcer(IDS, ThinkingBudget(min_tokens=5))
    f.start()
    f.feed(END)
    assert f.round_min_tokens() == 1
    f.feed(1)
    assert f.round_min_tokens() == 0


def test_num_waits_counts_continuations_independently_of_min():
    f = Script(ThinkingBudget(num_waits=2)).run([1, END, 2, END, 3, END, 5, EOT])
    assert f.num_waits == 2
    assert f.thinking_ids == [1, *WAIT, 2, *WAIT, 3]
    assert f.answer_ids == [5]


def test_min_and_max_together_continuation_truncated_to_cap():
    s = Script(ThinkingBudget(min_tokens=5, max_tokens=5))
    f = s.run([1, 2, 3, 4, END, 9, EOT])
    # At 4 tokens the model stops; only one "Wait" token fits under the cap of 5, then the end is forced.
    assert f.thinking_ids == [1, 2, 3, 4, WAIT[0]]
    assert f.forced_end and f.num_waits == 1
    assert f.answer_ids == [9]


@pytest.mark.parametrize("lo,hi", [(0, 0), (0, 1), (1, 1), (0, 3), (2, 3), (3, 8), (7, 9)])
def test_control_is_total_for_any_script(lo, hi):
    # Whatever the model emits, the thinking length ends within [lo, hi].
    scripts = [[END] * 30, [1] * 30, [1, END] * 15, [60, 61, 1, 60, 61, 62] * 5]
    for tokens in scripts:
        f = Script(ThinkingBudget(min_tokens=lo, max_tokens=hi)).run(tokens + [EOT])
        assert lo <= f.thinking_tokens <= hi, (tokens[:6], f.thinking_ids)
        assert f.phase is Phase.DONE


def test_zero_budget_ends_before_generation():
    f = BudgetForcer(IDS, ThinkingBudget(max_tokens=0))
    assert f.start() is Signal.RESTART
    assert f.phase is Phase.ANSWER and f.forced_end
    assert f.sequence == list(DELIM)


def test_budget_of_one():
    f = Script(ThinkingBudget(max_tokens=1)).run([5, 6, EOT])
    assert f.thinking_ids == [5] and f.answer_ids == [6] and f.forced_end


def test_min_one_with_immediate_stop():
    f = Script(ThinkingBudget(min_tokens=1, max_tokens=1)).run([END, 6, EOT])
    assert f.thinking_ids == [WAIT[0]] and f.forced_end and f.answer_ids == [6]


def test_delimiter_split_across_tokens():
    f = Script(ThinkingBudget()).run([1, 60, 61, 62, 8, EOT])
    assert f.thinking_ids == [1]
    assert f.answer_ids == [8]
    assert not f.forced_end


def test_partial_delimiter_is_thinking():
    f = Script(ThinkingBudget()).run([1, 60, 61, 2, 60, 3, END, EOT])
    assert f.thinking_ids == [1, 60, 61, 2, 60, 3]


def test_split_delimiter_under_minimum_is_dropped():
    f = Script(ThinkingBudget(min_tokens=4)).run([1, 60, 61, 62, 2, END, 8, EOT])
    assert f.thinking_ids == [1, *WAIT, 2]
    assert f.num_waits == 1


def test_trigger_never_straddles_an_injected_continuation():
    # Continuation ends in 61, 62 would complete MULTI only across the injection boundary.
    ids = FormatIds(thinking_end=DELIM, end_triggers=((END,), MULTI), continuation=(60, 61), answer_stop=frozenset({EOT}))
    f = Script(ThinkingBudget(min_tokens=3), ids).run([END, 62, 1, END, EOT])
    assert f.thinking_ids == [60, 61, 62, 1]
    assert f.num_waits == 1


def test_answer_cap():
    f = Script(ThinkingBudget(max_answer_tokens=3)).run([END, 1, 2, 3, 4, 5])
    assert f.answer_ids == [1, 2, 3]
    assert f.answer_finish == "length"
    assert f.phase is Phase.DONE


def test_answer_round_limits():
    f = BudgetForcer(IDS, ThinkingBudget(max_answer_tokens=4))
    f.start()
    f.feed(END)
    assert f.round_stop_ids() == [EOT]
    f.feed(1)
    assert f.round_max_tokens() == 3


def test_engine_ending_a_round_early_forces_the_end():
    f = BudgetForcer(IDS, ThinkingBudget())
    f.start()
    f.feed(1)
    assert f.end_of_round() is Signal.RESTART  # e.g. the context ran out
    assert f.forced_end and f.phase is Phase.ANSWER
    assert f.end_of_round() is Signal.DONE
    assert f.answer_finish == "length"


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"min_tokens": 5, "max_tokens": 3}, "min_thinking_tokens"),
        ({"min_tokens": -1}, "min_thinking_tokens"),
        ({"max_tokens": -2}, "max_thinking_tokens"),
        ({"max_tokens": 2.5}, "max_thinking_tokens"),
        ({"max_tokens": True}, "max_thinking_tokens"),
        ({"num_waits": -1}, "num_waits"),
        ({"max_answer_tokens": 0}, "max_answer_tokens"),
        ({"max_total_tokens": 0}, "max_total_tokens"),
        ({"max_total_tokens": 4, "min_tokens": 3}, "min_thinking_tokens"),  # 2 of 4 kept for the answer
    ],
)
def test_bad_budgets_name_the_field(kwargs, field):
    with pytest.raises(BudgetError) as e:
        ThinkingBudget(**kwargs)
    assert e.value.field == field
    assert field in str(e.value)


# -- the total bound (OpenAI's max_tokens: thinking + answer) ------------------------------------
@pytest.mark.parametrize("total,answer,reserve,cap", [
    (1, 512, 1, 0),  # the smallest bound: no thinking, one answer token
    (2, 512, 1, 1),
    (4, 512, 2, 2),  # a small bound splits evenly
    (5, 512, 3, 2),
    (100, 8, 8, 92),  # a small answer cap is all the reserve needs
    (100, 50, 50, 50),
])
def test_total_bound_keeps_room_for_the_answer(total, answer, reserve, cap):
    b = ThinkingBudget(max_answer_tokens=answer, max_total_tokens=total)
    assert b.answer_reserve == reserve == min(answer, (total + 1) // 2)
    assert b.thinking_cap == cap == total - reserve


def test_total_bound_and_thinking_cap_take_the_lower():
    assert ThinkingBudget(max_tokens=20, max_answer_tokens=8, max_total_tokens=100).thinking_cap == 20
    assert ThinkingBudget(max_tokens=20, max_answer_tokens=8, max_total_tokens=24).thinking_cap == 16
    assert ThinkingBudget(max_tokens=20).thinking_cap == 20 and ThinkingBudget().thinking_cap is None


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7, 12])
def test_total_bound_forces_the_end_early_and_bounds_everything(total):
    # A model that never stops thinking: the end is forced where the answer still fits.
    s = Script(ThinkingBudget(max_answer_tokens=512, max_total_tokens=total))
    f = s.run([1] * 40)
    assert f.phase is Phase.DONE and f.answer_finish == "length"
    assert f.thinking_tokens == total // 2
    assert f.answer_tokens == total - total // 2 >= 1
    assert f.thinking_tokens + f.answer_tokens == total
    assert f.forced_end or total == 1


def test_early_natural_end_lets_the_answer_use_the_rest():
    # Thinking stops after 2 of 10: the answer may use up to 8 (its own cap permitting).
    f = Script(ThinkingBudget(max_answer_tokens=512, max_total_tokens=10)).run([1, 2, END] + [5] * 20)
    assert f.thinking_tokens == 2 and not f.forced_end
    assert f.answer_tokens == 8 and f.answer_finish == "length"
    f = Script(ThinkingBudget(max_answer_tokens=3, max_total_tokens=10)).run([1, 2, END] + [5] * 20)
    assert f.answer_tokens == 3


def test_total_bound_round_limits_and_min_thinking():
    f = BudgetForcer(IDS, ThinkingBudget(min_tokens=5, max_answer_tokens=4, max_total_tokens=10))
    f.start()
    assert f.round_max_tokens() == 6  # 10 - 4 kept for the answer
    for t in (1, END, 2):  # under the minimum: the end is dropped, "Wait" appended
        f.feed(t)
    assert f.thinking_ids == [1, *WAIT, 2] and f.phase is Phase.THINKING
    assert f.round_max_tokens() == 2
    f.feed(END)  # 4 < 5: "Wait" again, which reaches the cap of 6, so the end is forced
    assert f.thinking_ids == [1, *WAIT, 2, *WAIT] and f.phase is Phase.ANSWER and f.forced_end
    assert f.round_max_tokens() == 4


def test_control_methods_keep_the_total_bound():
    from s1ray.engine.control import plan_control

    b = ThinkingBudget(max_tokens=64, max_answer_tokens=8, max_total_tokens=12)
    for method in ("none", "token_conditional", "class_conditional", "rejection_sampling"):
        assert plan_control(method, b).budget.max_total_tokens == 12


def test_stop_ends_the_answer():
    f = BudgetForcer(IDS, ThinkingBudget())
    f.start()
    f.feed(END)
    f.feed(5)
    assert f.stop() is Signal.DONE and f.answer_finish == "stop"
    g = BudgetForcer(IDS, ThinkingBudget())
    g.start()
    with pytest.raises(RuntimeError):
        g.stop()  # stop strings apply to the answer only


def test_empty_continuation_suppresses_the_end_and_appends_nothing():
    """The string ablation's "no string" row: an early end is dropped and the model goes on."""
    ids = FormatIds(thinking_end=DELIM, end_triggers=((END,), MULTI), continuation=(), answer_stop=frozenset({EOT}))
    s = Script(ThinkingBudget(num_waits=2), ids)
    f = s.run([1, END, 2, END, 3, END, 5, EOT])
    assert f.thinking_ids == [1, 2, 3]
    assert f.num_waits == 2 and not f.forced_end
    assert f.answer_ids == [5]
    assert s.rounds[1] == [1]  # the next round resumes right after the dropped end


LEAD_IDS = FormatIds(thinking_end=(90, END, 91), end_triggers=((END,),), continuation=WAIT, answer_stop=frozenset({EOT}))


def test_natural_end_after_the_delimiters_lead_keeps_one_lead():
    s = Script(ThinkingBudget(), LEAD_IDS)
    f = s.run([1, 2, 90, END, 7, EOT])
    assert LEAD_IDS.delimiter_lead == (90,)
    assert f.thinking_ids == [1, 2] and f.thinking_tokens == 2
    assert f.sequence == [1, 2, 90, END, 91, 7]  # not [1, 2, 90, 90, END, ...]


def test_a_suppressed_end_keeps_the_lead_as_thinking():
    f = Script(ThinkingBudget(min_tokens=4), LEAD_IDS).run([1, 90, END, 2, 90, END, 7, EOT])
    assert f.thinking_ids == [1, 90, *WAIT, 2]  # under the minimum the lead stays; at the end it goes
    assert f.num_waits == 1


def test_a_lead_is_never_taken_from_a_continuation():
    ids = FormatIds(thinking_end=(90, END, 91), end_triggers=((END,),), continuation=(70, 90), answer_stop=frozenset({EOT}))
    f = Script(ThinkingBudget(num_waits=1), ids).run([1, END, END, 7, EOT])
    assert f.thinking_ids == [1, 70, 90]


@pytest.mark.parametrize("budget", [ThinkingBudget(0, 9), ThinkingBudget(4, 12, num_waits=1), ThinkingBudget(5, None)])
def test_extend_thinking_is_feed_without_the_checks_that_cannot_fire(budget):
    """The in-engine shortcut: up to thinking_room ids that end no trigger leave the forcer as
    feeding them one by one does, and the next id fed is the one the cap acts on."""
    by_feed, by_extend = BudgetForcer(IDS, budget), BudgetForcer(IDS, budget)
    for f in (by_feed, by_extend):
        f.start()
        f.feed(1)
        f.feed(END)  # a stop: a Wait where the budget wants one, else the end of thinking
    if by_feed.phase is not Phase.THINKING:
        assert by_extend.thinking_room() == 0
        return
    room = by_feed.thinking_room()
    ids = [60, 61, 3] * 3  # a multi-token trigger's first ids, never its last
    ids = ids[: min(room, len(ids))]
    for t in ids:
        assert by_feed.feed(t) is Signal.CONTINUE
    by_extend.extend_thinking(ids)
    assert (by_extend.sequence, by_extend.round_min_tokens(), by_extend.thinking_room()) == \
        (by_feed.sequence, by_feed.round_min_tokens(), by_feed.thinking_room())
    if budget.max_tokens is not None:
        for f in (by_feed, by_extend):
            while f.thinking_room():
                f.extend_thinking([3])
            assert f.feed(3) is Signal.RESTART and f.forced_end  # the id at the cap ends thinking
            assert f.thinking_tokens == budget.max_tokens
    else:
        assert by_feed.thinking_room() == 1 << 30
