"""Work units, prompts and output rows: the parts both teacher paths share.

A *unit* is one (question, sample_index) pair: ``samples_per_question`` k gives k units per
question, keyed ``(id, sample_index)``. Every unit comes out as exactly one output row
(:data:`TRACE_COLUMNS`): generated, or with ``error`` set.

Pure apart from loading tokenizers (cached per process, so Ray tasks load each once).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from s1ray import formats
from s1ray.answers import extract_answer
from s1ray.data.schema import Question
from s1ray.traces.config import PromptConfig
from s1ray.traces.parsing import parse_output

Key = tuple[str, int]

# name -> pyarrow type name; the order is the column order of every shard.
TRACE_COLUMNS: dict[str, str] = {
    "id": "string",
    "sample_index": "int32",
    "source": "string",
    "question": "string",
    "reference_answer": "string",
    "teacher_model": "string",
    "thinking": "string",
    "answer": "string",  # the attempt
    "extracted_answer": "string",
    "finish_reason": "string",  # stop | length (None on error)
    "thinking_tokens": "int32",  # student tokenizer
    "answer_tokens": "int32",  # student tokenizer
    "prompt_tokens": "int32",  # teacher's count, when known
    "completion_tokens": "int32",  # teacher's count, when known
    "reasoning_format": "string",  # the shape parsed: think-tags | s1 | reasoning_content | none
    "thinking_closed": "bool_",
    "error": "string",  # None when ok
    "attempts": "int32",  # API: requests made for this row
    "latency_s": "float64",  # generation time of this row (engine or HTTP, all attempts)
    "finished_at": "float64",  # unix time
}


def unit_key(row: dict[str, Any]) -> Key:
    return (str(row["id"]), int(row["sample_index"]))


def make_units(questions: list[Question], k: int) -> list[dict[str, Any]]:
    """One unit per (question, sample); only the fields generation needs."""
    return [
        {
            "id": q.id,
            "sample_index": s,
            "source": q.source,
            "question": q.question,
            "solution": q.solution,
            "reference_answer": q.answer,
        }
        for q in questions
        for s in range(k)
    ]


def user_content(unit: dict[str, Any], prompt: PromptConfig) -> str:
    fields = {
        "id": unit["id"],
        "source": unit.get("source") or "",
        "question": unit["question"],
        "solution": unit.get("solution") or "",
        "answer": unit.get("reference_answer") or "",
    }
    return prompt.template.format(**fields)


def messages_for(unit: dict[str, Any], prompt: PromptConfig) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": prompt.system}] if prompt.system else []
    msgs.append({"role": "user", "content": user_content(unit, prompt)})
    return msgs


def render_prompt(tokenizer, unit: dict[str, Any], prompt: PromptConfig) -> str:
    """A unit's prompt, rendered as the engine renders its own (:func:`s1ray.formats.render_prompt`),
    opening thinking with ``prompt.thinking_prefix`` (e.g. s1's ``<|im_start|>think\\n``)."""
    msgs = messages_for(unit, prompt)
    return formats.render_prompt(tokenizer, msgs, prompt.thinking_prefix, **prompt.chat_template_kwargs)


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from s1ray.dataio import local_copy

    return AutoTokenizer.from_pretrained(local_copy(name))


def token_counter(name: str) -> Callable[[str], int]:
    tok = load_tokenizer(name)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False)) if text else 0

    return count


def finish_row(
    unit: dict[str, Any],
    *,
    teacher_model: str,
    count: Callable[[str], int],
    reasoning_format: str,
    thinking_open: bool,
    text: str | None = None,
    reasoning_content: str | None = None,
    finish_reason: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    error: str | None = None,
    attempts: int = 1,
    latency_s: float | None = None,
) -> dict[str, Any]:
    """One output row from a unit and what the teacher returned (or the error)."""
    row: dict[str, Any] = {
        "id": str(unit["id"]),
        "sample_index": int(unit["sample_index"]),
        "source": unit.get("source") or "",
        "question": unit["question"],
        "reference_answer": unit.get("reference_answer"),
        "teacher_model": teacher_model,
        "thinking": "",
        "answer": "",
        "extracted_answer": None,
        "finish_reason": None,
        "thinking_tokens": 0,
        "answer_tokens": 0,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "reasoning_format": None,
        "thinking_closed": False,
        "error": error,
        "attempts": attempts,
        "latency_s": latency_s,
        "finished_at": time.time(),
    }
    if error is not None:
        return row
    parsed = parse_output(text, reasoning_format, reasoning_content, thinking_open)
    row.update(
        thinking=parsed.thinking,
        answer=parsed.answer,
        extracted_answer=extract_answer(parsed.answer),
        finish_reason=finish_reason,
        thinking_tokens=count(parsed.thinking),
        answer_tokens=count(parsed.answer),
        reasoning_format=parsed.format,
        thinking_closed=parsed.thinking_closed,
    )
    return row
