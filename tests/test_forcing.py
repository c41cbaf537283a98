"""The in-engine backend's pure half against the rounds backend's BudgetForcer (no engine).

The processor's per-row loop is replayed here in plain Python: each step a pending id is forced,
otherwise the scripted "model" proposes its next token, and a proposed end trigger is the model
trying to stop. The rounds reference feeds the same proposals to a BudgetForcer directly.
"""

import random
from types import SimpleNamespace

import pytest

from s1ray.engine.budget import BudgetForcer, FormatIds, Phase, ThinkingBudget
from s1ray.engine.forcing import ForcedRow, OutputSplitter, forcing_payload, in_engine_supports
from s1ray.engine.types import GenerationRequest

END, EOT = 50, 51  # end triggers; EOT also ends the answer
WAIT = (70, 71)
DELIM = (90, END, 91, 92)  # like "\n<|im_start|>answer\n": holds a trigger
IDS = FormatIds(thinking_end=DELIM, end_triggers=((END,), (EOT,)), continuation=WAIT, answer_stop=frozenset({EOT}))
TRIGGERS = {END, EOT}
Q = [{"role": "user", "content": "q"}]


def masked(forcer: BudgetForcer, tok: int) -> bool:
    """Right after a continuation both backends mask the triggers for one token (min_tokens=1)."""
    return forcer.phase is Phase.THINKING and forcer.round_min_tokens() == 1 and tok in TRIGGERS


def rounds_reference(budget: ThinkingBudget, proposals: list[int]) -> BudgetForcer:
    f = BudgetForcer(IDS, budget)
    f.start()
    for tok in proposals:
        if f.phase is Phase.DONE:
            break
        if not masked(f, tok):
            f.feed(tok)
    return f


def in_engine_replay(budget: ThinkingBudget, proposals: list[int]) -> tuple[ForcedRow, list[int]]:
    out: list[int] = []
    row = ForcedRow(forcing_payload("k", IDS, budget, 0.0, None), out, set())
    it = iter(proposals)
    while True:
        row.sync()
        nxt = row.pending()
        if nxt is None:
            tok = next(it, None)
            while tok is not None and masked(row.forcer, tok):
                tok = next(it, None)
            if tok is None:
                break
            if tok in TRIGGERS and row.forcer.phase is Phase.THINKING:
                nxt = row.stop_thinking()
            else:
                nxt = tok
        out.append(nxt)
        if nxt == EOT:  # a stop id: vLLM ends the request
            row.sync()
            break
    return row, out


def check_equivalent(budget: ThinkingBudget, proposals: list[int]) -> None:
    ref = rounds_reference(budget, proposals)
    row, out = in_engine_replay(budget, proposals)
    f = row.forcer
    assert (f.thinking_ids, f.answer_ids, f.num_waits, f.forced_end, f.phase) == (
        ref.thinking_ids, ref.answer_ids, ref.num_waits, ref.forced_end, ref.phase)
    while ref.phase is not Phase.DONE:  # the script ran out: the engine hit the context
        ref.end_of_round()
    split = OutputSplitter(IDS, budget)
    for tok in out:
        split.push(tok)
    if split.phase is not Phase.DONE:
        split.end()
    assert split.thinking_ids == ref.thinking_ids and split.answer_ids == ref.answer_ids
    assert split.forced_end == ref.forced_end
    assert split.answer_finish == ref.answer_finish
    if ref.num_waits:
        assert split.may_hold_continuations()


@pytest.mark.parametrize("budget,proposals", [
    (ThinkingBudget(), [1, 2, END, 3, 4, EOT]),  # natural end, natural end of turn
    (ThinkingBudget(max_tokens=3, max_answer_tokens=2), [1, 2, 3, 4, 5, 6, 7]),  # both caps
    (ThinkingBudget(max_tokens=0, max_answer_tokens=3), [5, 6, EOT]),  # zero cap
    (ThinkingBudget(min_tokens=6), [1, END, 2, END, EOT, 3, END, 8, EOT]),  # Waits, masked trigger after Wait
    (ThinkingBudget(num_waits=2), [END, END, 1, END, 2, END, 9, EOT]),
    (ThinkingBudget(min_tokens=4, max_tokens=4), [1, 2, 3, END, 7, EOT]),  # Wait cut short by the cap
    (ThinkingBudget(min_tokens=2, max_tokens=9, max_answer_tokens=1), [EOT, 1, 2, 3]),  # trigger at once
])
def test_in_engine_replay_equals_rounds(budget, proposals):
    check_equivalent(budget, proposals)


def test_in_engine_replay_equals_rounds_on_random_scripts():
    rng = random.Random(0)
    alphabet = [1, 2, 3, 70, 90, 91, END, EOT]
    for _ in range(2000):
        lo = rng.choice([0, 0, 1, 5, 12])
        hi = rng.choice([None, lo, lo + 3, lo + 20])
        budget = ThinkingBudget(lo, hi, rng.choice([0, 0, 1, 3]), rng.choice([1, 4, 30]))
        check_equivalent(budget, [rng.choice(alphabet) for _ in range(rng.randint(0, 80))])


def test_forced_ids_are_what_the_forcer_appended():
    out: list[int] = []
    row = ForcedRow(forcing_payload("k", IDS, ThinkingBudget(min_tokens=3), 0.0, None), out, {7})
    assert row.pending() is None
    assert row.stop_thinking() == WAIT[0]  # the trigger never enters the output
    out.append(WAIT[0])
    row.sync()
    assert row.pending() == WAIT[1]
    assert row.after_wait_mask == (7, END, EOT)  # the engine's EOS ids are masked as min_tokens masks them


def test_zero_cap_forces_the_end_of_thinking_from_the_first_step():
    row = ForcedRow(forcing_payload("k", IDS, ThinkingBudget(0, 0), 0.0, None), [], set())
    assert row.pending() == DELIM[0]


def test_unseeded_and_seeded_stop_draws():
    a = ForcedRow(forcing_payload("a", IDS, ThinkingBudget(), 1.0, 5), [], set())
    b = ForcedRow(forcing_payload("b", IDS, ThinkingBudget(), 1.0, 5), [], set())
    assert [a.rng.random() for _ in range(3)] == [b.rng.random() for _ in range(3)]
    assert not a.greedy and a.temperature == 1.0


# -- which requests go in-engine ----------------------------------------------------------------------
def test_supported_requests():
    assert in_engine_supports(GenerationRequest(messages=Q), IDS, 0.0) is None
    assert in_engine_supports(GenerationRequest(messages=Q, temperature=1.0), IDS, 1.0) is None
    # top_p does not matter to greedy decoding
    assert in_engine_supports(GenerationRequest(messages=Q, top_p=0.5), IDS, 0.0) is None


@pytest.mark.parametrize("req,ids,why", [
    (GenerationRequest(messages=Q, temperature=1.0, top_p=0.9), IDS, "top_p"),
    (SimpleNamespace(top_p=1.0, stop=["x"]), IDS, "stop"),
    (SimpleNamespace(top_p=1.0, logprobs=True), IDS, "logprobs"),
    (SimpleNamespace(top_p=1.0, repetition_penalty=1.1), IDS, "repetition_penalty"),
    (GenerationRequest(messages=Q), FormatIds(DELIM, ((END,), (60, 61)), WAIT, frozenset({EOT})), "multi-token"),
    (GenerationRequest(messages=Q), FormatIds(DELIM, ((END,),), WAIT, frozenset({EOT})), "end-of-turn"),
    (GenerationRequest(messages=Q), FormatIds(DELIM, ((END,), (EOT,)), (END,), frozenset({EOT})), "continuation"),
    (GenerationRequest(messages=Q), FormatIds((90, 91), ((END,), (EOT,)), WAIT, frozenset({EOT})), "no end trigger"),
    (GenerationRequest(messages=Q), FormatIds(DELIM, ((END,), (EOT,)), (), frozenset({EOT})), "empty continuation"),
])
def test_requests_that_fall_back_to_rounds(req, ids, why):
    reason = in_engine_supports(req, ids, getattr(req, "temperature", 1.0))
    assert reason is not None and why in reason


def test_unset_fields_do_not_fall_back():
    req = SimpleNamespace(top_p=1.0, stop=None, logprobs=False, repetition_penalty=1.0, presence_penalty=0.0)
    assert in_engine_supports(req, IDS, 0.0) is None


def test_request_forcing_field_is_checked():
    from s1ray.engine.budget import BudgetError

    with pytest.raises(BudgetError) as e:
        GenerationRequest(messages=Q, forcing="fast")
    assert e.value.field == "forcing"


def test_a_lead_the_model_wrote_is_the_delimiters_in_both_backends():
    """The model writes the delimiter's lead (s1's "\\n") and then the trigger: thinking ends
    before the lead, and the output holds the lead once, as in the format."""
    budget = ThinkingBudget()
    check_equivalent(budget, [1, 90, END, 3, EOT])
    row, out = in_engine_replay(budget, [1, 90, END, 3, EOT])
    assert row.forcer.thinking_ids == [1] and row.forcer.answer_ids == [3]
    assert out == [1, *DELIM, 3, EOT]
