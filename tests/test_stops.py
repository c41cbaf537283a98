"""Stop strings on the answer and the streamed text of a forced request (pure; no engine)."""

import math

import pytest

from s1ray.engine.budget import BudgetForcer, FormatIds, Phase, Signal, ThinkingBudget
from s1ray.engine.progress import ForcedOutput
from s1ray.engine.stops import StopMatcher, cut_at_stop

END, EOT = 1, 2
IDS = FormatIds(thinking_end=(3,), end_triggers=((END,),), continuation=(4,), answer_stop=frozenset({EOT}))


class CharTokenizer:
    """Token id = code point (ids 1-4 are the format's control tokens)."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) if i > 4 else f"<{i}>" for i in ids)


def enc(text):
    return [ord(c) for c in text]


@pytest.mark.parametrize("text,stops,out,hit", [
    ("abc\ndef", ["\n"], "abc", "\n"),
    ("abcdef", ["x"], "abcdef", None),
    ("a END b STOP", ["STOP", "END"], "a ", "END"),  # the earliest occurrence wins
    ("", ["x"], "", None),
])
def test_cut_at_stop(text, stops, out, hit):
    assert cut_at_stop(text, stops) == (out, hit)


def test_matcher_finds_a_stop_across_pieces_and_holds_back_its_prefix():
    m = StopMatcher(["###"])
    assert not m.add("ab#")
    assert m.safe_len() == 1  # "#" and the char before may start "###"
    assert not m.add("#")
    assert m.add("#tail")
    assert m.text == "ab" and m.matched == "###" and m.safe_len() == 2


def test_matcher_without_stops_emits_everything():
    m = StopMatcher(())
    assert not m.add("abc") and m.safe_len() == 3


class Label:
    def __init__(self, logprob):
        self.logprob = logprob


def run(out: ForcedOutput, tokens, positions=None):
    chunks = []
    for i, t in enumerate(tokens):
        sig = out.feed(t, (positions or {}).get(i))
        chunks += out.flush()
        if sig is Signal.DONE:
            break
        if sig is Signal.RESTART:
            continue
    chunks += out.flush(final=True)
    return chunks


def test_answer_stops_at_the_stop_string_and_counts_its_tokens():
    f = BudgetForcer(IDS, ThinkingBudget())
    f.start()
    out = ForcedOutput(f, CharTokenizer(), stop=("\n\n",))
    chunks = run(out, enc("hm") + [END] + enc("42\n\nmore") + [EOT])
    assert "".join(t for k, t in chunks if k == "thinking") == "hm"
    assert "".join(t for k, t in chunks if k == "answer") == "42"
    assert f.answer_finish == "stop" and out.answer.matched == "\n\n"
    assert f.answer_tokens == 4  # "4", "2", "\n", "\n": generated up to the stop's last token


def test_stop_strings_never_apply_to_thinking():
    f = BudgetForcer(IDS, ThinkingBudget())
    f.start()
    out = ForcedOutput(f, CharTokenizer(), stop=("x",))
    run(out, enc("xx") + [END] + enc("ab") + [EOT])
    assert f.thinking_ids == enc("xx") and f.answer_finish == "stop" and out.answer.matched is None


def test_logprobs_cover_answer_tokens_only():
    f = BudgetForcer(IDS, ThinkingBudget(max_answer_tokens=2))
    f.start()
    out = ForcedOutput(f, CharTokenizer(), logprobs=1)
    a, b = ord("a"), ord("b")
    positions = {3: {a: Label(-0.5), b: Label(-1.0)}, 4: {b: Label(-2.0), a: Label(-0.1)}}
    run(out, enc("tt") + [END, a, b, a], positions)
    assert f.phase is Phase.DONE and f.answer_ids == [a, b]
    assert [(t.token, t.logprob) for t in out.logprobs] == [("a", -0.5), ("b", -2.0)]
    assert [t.top for t in out.logprobs] == [[("a", a, -0.5)], [("a", a, -0.1)]]  # the best alternative


def test_missing_position_gives_nan_not_a_crash():
    f = BudgetForcer(IDS, ThinkingBudget(max_tokens=0))
    f.start()
    out = ForcedOutput(f, CharTokenizer(), logprobs=0)
    out.feed(ord("z"))
    assert math.isnan(out.logprobs[0].logprob) and out.logprobs[0].top == []
