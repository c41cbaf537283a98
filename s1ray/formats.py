"""Reasoning formats: where thinking starts and ends inside the assistant turn.

A format is pure text configuration. The engine turns the strings into token ids with the
model's tokenizer once, and from then on works on ids only (so thinking tokens are counted by
id, exactly, and nothing is re-tokenized between rounds).

Two formats ship:

* ``s1`` -- the s1/s1.1 models: the assistant turn opens with ``<|im_start|>think``, thinking ends
  at ``<|im_start|>answer`` (s1's reference stops thinking at any ``<|im_start|>`` or
  ``<|im_end|>``), the answer follows.
* ``think-tags`` -- DeepSeek-R1 distills, QwQ, Qwen3: ``<think>`` ... ``</think>`` then the answer.

:func:`render_prompt` is the one place a prompt is rendered (the engine, SFT data and local
trace generation all call it), so a model is trained on exactly the prompt it is served with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator


@dataclass(frozen=True)
class ReasoningFormat:
    """The delimiters of one reasoning format.

    name: the format's name, as given in configs and on the command line.
    thinking_start: appended after the chat template's generation prompt to open thinking.
    thinking_end: inserted when the engine forces the end of thinking (the budget cap).
    end_triggers: texts whose appearance in the generated thinking means "the model tries to
        stop thinking". Each is matched as a token-id sequence, so it may span several tokens.
    answer_prefix: appended after ``thinking_end`` when the end is forced, so the model answers
        instead of reasoning on inside its answer (s1 uses "Final Answer:").
    continuation: what replaces a suppressed end of thinking (s1's "Wait").
    answer_stop: texts that end the answer (end of turn).
    """

    name: str
    thinking_start: str
    thinking_end: str
    end_triggers: tuple[str, ...]
    answer_prefix: str = "Final Answer:"
    continuation: str = "Wait"
    answer_stop: tuple[str, ...] = field(default=("<|im_end|>", "<|endoftext|>"))


S1 = ReasoningFormat(
    name="s1",
    thinking_start="<|im_start|>think\n",
    thinking_end="\n<|im_start|>answer\n",
    end_triggers=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
)

THINK_TAGS = ReasoningFormat(
    name="think-tags",
    thinking_start="<think>\n",
    thinking_end="\n</think>\n\n",
    end_triggers=("</think>", "<|im_end|>", "<|endoftext|>"),
)

FORMATS: dict[str, ReasoningFormat] = {f.name: f for f in (S1, THINK_TAGS)}


def get_format(name: str) -> ReasoningFormat:
    """Look a format up by name, with an error that lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"format: unknown reasoning format {name!r}; expected one of {sorted(FORMATS)}"
        ) from None


def _check_format_name(name: str) -> str:
    if name not in FORMATS:
        raise ValueError(f"unknown reasoning format {name!r}; expected one of {sorted(FORMATS)}")
    return name


# A config field holding a format's name, validated on load (shared by every job's config).
FormatName = Annotated[str, AfterValidator(_check_format_name)]


# -- prompts ----------------------------------------------------------------------------------
def open_thinking(text: str, thinking_start: str) -> str:
    """``text`` ending with ``thinking_start``: appended, unless the chat template (or the raw
    prompt) already ends with it -- some templates open thinking themselves."""
    return text if text.endswith(thinking_start) else text + thinking_start


def render_prompt(
    tokenizer, messages: Sequence[Mapping[str, Any]], thinking_start: str = "", **chat_template_kwargs: Any
) -> str:
    """The text a model continues: the chat template with its generation prompt, then the start
    of thinking (a format's ``thinking_start``, or a job's own prefix)."""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True, **chat_template_kwargs
    )
    return open_thinking(text, thinking_start)


def single_token_ids(tokenizer, texts: Iterable[str]) -> frozenset[int]:
    """Ids of the ``texts`` that are one token each. Only a single-token marker can stop an answer
    exactly (Qwen-family tokenizers have ``<|im_end|>``/``<|endoftext|>`` as special tokens)."""
    ids = (tokenizer.encode(t, add_special_tokens=False) for t in texts)
    return frozenset(i[0] for i in ids if len(i) == 1)
