"""Splitting a teacher's output into thinking and answer (pure; no tokenizer, no Ray).

Three shapes of output:

* ``think-tags`` (DeepSeek-R1 and its distills, QwQ, Qwen3): ``<think>`` thinking ``</think>``
  answer. The opener is often in the *prompt* (the chat template appends ``<think>\\n``), so
  only the closer appears in the output.
* ``s1`` (s1/s1.1): ``<|im_start|>think`` thinking ``<|im_start|>answer`` answer. As in s1's
  reference, thinking also ends at any other ``<|im_start|>`` or at ``<|im_end|>``.
* ``reasoning_content``: APIs (DeepSeek, vLLM's reasoning parsers) that return the thinking in
  ``message.reasoning_content`` (or ``reasoning``) and the answer in ``message.content``.

``none`` is a plain answer (solvers such as Qwen2.5-7B-Instruct): no thinking. ``auto`` picks
``reasoning_content`` when given, else the format whose delimiters appear, else -- when the
prompt opened thinking -- "all thinking, not closed" (a truncated trace), else ``none``.

The answer is cut at the first end-of-turn marker (``<|im_end|>``, ``<|endoftext|>``); thinking
and answer are stripped of surrounding whitespace. The delimiters themselves come from
:mod:`s1ray.formats`, so the engine's budget forcing and this parser agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from s1ray.formats import S1, THINK_TAGS

THINK_OPEN = THINK_TAGS.thinking_start.strip()  # <think>
THINK_CLOSE = THINK_TAGS.thinking_end.strip()  # </think>
S1_THINK = S1.thinking_start.strip()  # <|im_start|>think
S1_ANSWER = S1.thinking_end.strip()  # <|im_start|>answer
IM_START = "<|im_start|>"
END_OF_TURN = tuple(S1.answer_stop)  # <|im_end|>, <|endoftext|>


@dataclass(frozen=True)
class ParsedOutput:
    thinking: str
    answer: str
    format: str  # the shape found: reasoning_content | think-tags | s1 | none
    thinking_closed: bool  # the end of thinking was seen (or thinking came separately)


def _cut_at(text: str, markers: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for m in markers if (i := text.find(m)) != -1), default=-1)
    return (text, False) if cut == -1 else (text[:cut], True)


def _answer(text: str) -> str:
    return _cut_at(text, END_OF_TURN)[0].strip()


def _think_tags(text: str) -> ParsedOutput:
    close = text.find(THINK_CLOSE)
    head = text if close == -1 else text[:close]
    opener = head.find(THINK_OPEN)
    if opener != -1:
        head = head[opener + len(THINK_OPEN) :]
    if close == -1:
        thinking, _ = _cut_at(head, END_OF_TURN)  # the turn ended inside thinking
        return ParsedOutput(thinking.strip(), "", "think-tags", False)
    return ParsedOutput(head.strip(), _answer(text[close + len(THINK_CLOSE) :]), "think-tags", True)


def _s1(text: str) -> ParsedOutput:
    body = text.lstrip()
    if body.startswith(S1_THINK):
        body = body[len(S1_THINK) :]
    ans = body.find(S1_ANSWER)
    # s1's reference ends thinking at any <|im_start|> or <|im_end|>; only "answer" opens one.
    stop = min((i for m in (IM_START, *END_OF_TURN) if (i := body.find(m)) != -1), default=-1)
    if ans != -1 and (stop == -1 or ans <= stop):
        return ParsedOutput(body[:ans].strip(), _answer(body[ans + len(S1_ANSWER) :]), "s1", True)
    if stop == -1:
        return ParsedOutput(body.strip(), "", "s1", False)
    return ParsedOutput(body[:stop].strip(), "", "s1", False)


def _none(text: str) -> ParsedOutput:
    return ParsedOutput("", _answer(text), "none", True)


def detect_format(text: str, thinking_open: bool = False) -> str:
    if THINK_CLOSE in text or THINK_OPEN in text:
        return "think-tags"
    if S1_ANSWER in text or text.lstrip().startswith(S1_THINK):
        return "s1"
    if thinking_open:
        return "open"
    return "none"


def parse_output(
    text: str | None,
    fmt: str = "auto",
    reasoning_content: str | None = None,
    thinking_open: bool = False,
) -> ParsedOutput:
    """Split one output into (thinking, answer).

    ``fmt``: ``auto``, ``think-tags``, ``s1`` or ``none``. ``reasoning_content``: the thinking
    when an API returned it separately (``text`` is then the answer). ``thinking_open``: the
    prompt already opened thinking, so an output with no delimiter at all is thinking that was
    cut off, not an answer.
    """
    text = text or ""
    if reasoning_content:
        # The server already split; a leftover closer in content is stripped all the same.
        inner = _think_tags(text) if THINK_CLOSE in text else None
        thinking = reasoning_content.strip()
        if inner is not None and inner.thinking:
            thinking = (thinking + "\n" + inner.thinking).strip()
        return ParsedOutput(thinking, inner.answer if inner else _answer(text), "reasoning_content", True)
    if fmt == "auto":
        fmt = detect_format(text, thinking_open)
        if fmt == "open":
            thinking, _ = _cut_at(text, END_OF_TURN)
            return ParsedOutput(thinking.strip(), "", "none", False)
    if fmt == "think-tags":
        return _think_tags(text)
    if fmt == "s1":
        return _s1(text)
    if fmt == "none":
        return _none(text)
    raise ValueError(f"unknown reasoning format {fmt!r}; expected auto, think-tags, s1 or none")
