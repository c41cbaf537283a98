"""Output parsing for every reasoning format, output rows, the question schema, and the config."""

from __future__ import annotations

import json

import pytest

from s1ray.config import ConfigError, load_config
from s1ray.data.schema import Question, SchemaError, check_unique_ids, question_from_record, question_id
from s1ray.traces.config import TracesConfig
from s1ray.traces.parsing import parse_output
from s1ray.traces.records import TRACE_COLUMNS, finish_row, make_units, messages_for


# ------------------------------------------------------------------ think-tags
def test_think_tags_full():
    p = parse_output("<think>\nLet me add.\n2+2=4\n</think>\n\nThe answer is \\boxed{4}.<|im_end|>", "think-tags")
    assert (p.thinking, p.answer, p.format, p.thinking_closed) == (
        "Let me add.\n2+2=4", "The answer is \\boxed{4}.", "think-tags", True)


def test_think_tags_opener_in_prompt():
    # R1 distills: the chat template already appended "<think>\n"; only the closer is generated.
    p = parse_output("Let me add.\n</think>\nFinal: 4", "think-tags")
    assert (p.thinking, p.answer, p.thinking_closed) == ("Let me add.", "Final: 4", True)


def test_think_tags_truncated_is_all_thinking():
    p = parse_output("<think>\nstill going and going", "think-tags")
    assert (p.thinking, p.answer, p.thinking_closed) == ("still going and going", "", False)


def test_think_tags_turn_ends_inside_thinking():
    p = parse_output("<think>hmm<|im_end|>junk", "think-tags")
    assert (p.thinking, p.answer, p.thinking_closed) == ("hmm", "", False)


# ------------------------------------------------------------------ s1
def test_s1_full():
    text = "<|im_start|>think\nFirst, 12+30.\nWait, check.\n<|im_start|>answer\nAnswer: 42<|im_end|>"
    p = parse_output(text, "s1")
    assert (p.thinking, p.answer, p.format, p.thinking_closed) == (
        "First, 12+30.\nWait, check.", "Answer: 42", "s1", True)


def test_s1_prefix_in_prompt():
    p = parse_output("12+30 is 42\n<|im_start|>answer\nFinal Answer: $\\boxed{42}$", "s1")
    assert (p.thinking, p.answer) == ("12+30 is 42", "Final Answer: $\\boxed{42}$")


def test_s1_thinking_ends_at_other_im_start_or_im_end():
    # s1's reference stops thinking at any <|im_start|> / <|im_end|>: no answer then.
    p = parse_output("thinking<|im_start|>user\nhi", "s1")
    assert (p.thinking, p.answer) == ("thinking", "")
    p = parse_output("thinking<|im_end|>", "s1")
    assert (p.thinking, p.answer, p.thinking_closed) == ("thinking", "", False)
    p = parse_output("no delimiter at all", "s1")
    assert (p.thinking, p.answer, p.thinking_closed) == ("no delimiter at all", "", False)


def test_s1_answer_cut_at_end_of_turn():
    p = parse_output("t\n<|im_start|>answer\n42<|endoftext|>more<|im_end|>", "s1")
    assert p.answer == "42"


# ------------------------------------------------------------------ reasoning_content
def test_reasoning_content_separate():
    p = parse_output("The answer is 4.", "auto", reasoning_content="  2+2 is 4.\n")
    assert (p.thinking, p.answer, p.format, p.thinking_closed) == (
        "2+2 is 4.", "The answer is 4.", "reasoning_content", True)


def test_reasoning_content_wins_over_explicit_format_and_strips_leftover_closer():
    p = parse_output("</think>\n\n4", "s1", reasoning_content="think")
    assert (p.thinking, p.answer) == ("think", "4")


def test_reasoning_content_without_content():
    # Thinking ran out of tokens: content is null, reasoning_content carries everything.
    p = parse_output(None, "auto", reasoning_content="long thought")
    assert (p.thinking, p.answer) == ("long thought", "")


# ------------------------------------------------------------------ none / auto
def test_none_is_all_answer():
    p = parse_output("The answer is \\boxed{7}.<|im_end|>", "none")
    assert (p.thinking, p.answer, p.format) == ("", "The answer is \\boxed{7}.", "none")


@pytest.mark.parametrize(
    "text,fmt",
    [
        ("a</think>b", "think-tags"),
        ("<think>a", "think-tags"),
        ("<|im_start|>think\na<|im_start|>answer\nb", "s1"),
        ("a\n<|im_start|>answer\nb", "s1"),
        ("just an answer", "none"),
    ],
)
def test_auto_detects(text, fmt):
    assert parse_output(text, "auto").format == fmt


def test_auto_with_open_thinking_and_no_delimiter_is_truncated_thinking():
    p = parse_output("thinking cut off", "auto", thinking_open=True)
    assert (p.thinking, p.answer, p.thinking_closed) == ("thinking cut off", "", False)


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown reasoning format"):
        parse_output("x", "xml")


# ------------------------------------------------------------------ rows
def _count(s: str) -> int:
    return len(s.split())


def test_finish_row_ok_and_error():
    unit = make_units([Question(id="q1", question="2+2?", source="t", answer="4")], 2)[1]
    common = dict(teacher_model="T", count=_count, reasoning_format="auto", thinking_open=False)
    row = finish_row(unit, text="a b c</think>The answer is \\boxed{4}", finish_reason="stop",
                     completion_tokens=9, latency_s=0.5, **common)
    assert set(row) == set(TRACE_COLUMNS)
    assert (row["id"], row["sample_index"], row["reference_answer"]) == ("q1", 1, "4")
    assert (row["thinking"], row["thinking_tokens"], row["answer_tokens"]) == ("a b c", 3, 4)
    assert row["extracted_answer"] == "4" and row["error"] is None and row["finish_reason"] == "stop"
    err = finish_row(unit, error="HTTP 500: boom", attempts=3, **common)
    assert set(err) == set(TRACE_COLUMNS)
    assert (err["error"], err["attempts"], err["thinking"], err["finish_reason"]) == ("HTTP 500: boom", 3, "", None)


def test_prompt_template_and_system():
    cfg = load_config(TracesConfig, None, [
        "input.path=x.jsonl", "output_dir=o", "teacher.kind=api", "teacher.base_url=http://h",
        "teacher.model=m", "student_tokenizer=t", "prompt.system=Be brief.",
        "prompt.template='Problem ({source}): {question}'",
    ])
    unit = make_units([Question(id="a", question="1+1?", source="s")], 1)[0]
    assert messages_for(unit, cfg.prompt) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Problem (s): 1+1?"}]


# ------------------------------------------------------------------ schema
def test_question_from_record_mapping_and_extras():
    rec = {"unique_id": 7, "problem": "What?", "answer": 33, "subject": "Algebra", "level": 2}
    q = question_from_record(rec, {"id": "unique_id", "question": "problem"}, source="math500")
    assert q == Question(id="7", question="What?", source="math500", solution=None, answer="33",
                         metadata={"subject": "Algebra", "level": 2})
    q2 = question_from_record({"question": "What?"})
    assert q2.id == question_id("What?") and q2.id.startswith("q-") and q2.metadata == {}
    assert question_from_record({"question": "What?", "metadata": json.dumps({"a": 1})}).metadata == {"a": 1}


def test_schema_errors():
    with pytest.raises(SchemaError, match="question"):
        question_from_record({"id": "1", "question": "  "})
    with pytest.raises(SchemaError, match="unknown schema field"):
        question_from_record({"question": "x"}, {"prompt": "x"})
    with pytest.raises(SchemaError, match="duplicate"):
        check_unique_ids([Question(id="a", question="x"), Question(id="a", question="y")])


# ------------------------------------------------------------------ config
BASE = ["input.path=x.jsonl", "output_dir=o"]


def test_config_errors_name_fields():
    with pytest.raises(ConfigError, match="student_tokenizer: required"):
        load_config(TracesConfig, None, BASE + ["teacher.kind=api", "teacher.base_url=u", "teacher.model=m"])
    with pytest.raises(ConfigError, match="api_key_env.*NAME"):
        load_config(TracesConfig, None, BASE + ["teacher.kind=api", "teacher.base_url=u", "teacher.model=m",
                                                "student_tokenizer=t", "teacher.api_key_env=sk-123-456"])
    with pytest.raises(ConfigError, match="headers.*no credentials"):
        load_config(TracesConfig, None, BASE + ["teacher.kind=api", "teacher.base_url=u", "teacher.model=m",
                                                "student_tokenizer=t", "teacher.headers.Authorization=Bearer x"])
    with pytest.raises(ConfigError, match=r"prompt.template.*unknown field"):
        load_config(TracesConfig, None, BASE + ["teacher.engine.model=m", "prompt.template='{question} {foo}'"])
    with pytest.raises(ConfigError, match="reasoning_format"):
        load_config(TracesConfig, None, BASE + ["teacher.engine.model=m", "reasoning_format=xml"])
    with pytest.raises(ConfigError, match="max_replicas"):
        load_config(TracesConfig, None, BASE + ["teacher.engine.model=m", "teacher.replicas=4", "teacher.max_replicas=2"])


def test_local_teacher_is_default_and_student_defaults_to_teacher():
    cfg = load_config(TracesConfig, None, BASE + ["teacher.engine.model=m", "teacher.engine.tokenizer=tk"])
    assert cfg.teacher.kind == "local" and cfg.student_tokenizer_path == "tk"
    fp = cfg.generation_fingerprint()
    cfg2 = load_config(TracesConfig, None, BASE + ["teacher.engine.model=m", "teacher.engine.tokenizer=tk",
                                                   "teacher.replicas=8", "samples_per_question=4", "shard_size=7"])
    assert cfg2.generation_fingerprint() == fp  # throughput knobs and k do not change what is generated
    cfg3 = load_config(TracesConfig, None, BASE + ["teacher.engine.model=m", "teacher.engine.tokenizer=tk", "sampling.temperature=1"])
    assert cfg3.generation_fingerprint() != fp


# ------------------------------------------------------------------ inputs
def test_read_questions_every_format(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from s1ray.traces.config import InputConfig
    from s1ray.traces.inputs import InputError, read_questions

    recs = [{"uid": f"u{i}", "problem": f"What is {i}?", "answer": i, "level": i % 3} for i in range(5)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "q.json").write_text(json.dumps({"data": recs}))
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "q.parquet")
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "hf"))
    fields = {"id": "uid", "question": "problem"}
    for name in ("q.jsonl", "q.json", "q.parquet", "hf"):
        qs = read_questions(InputConfig(path=str(tmp_path / name), fields=fields, source="toy", limit=4))
        assert [q.id for q in qs] == ["u0", "u1", "u2", "u3"], name
        assert qs[2] == Question(id="u2", question="What is 2?", source="toy", answer="2", metadata={"level": 2})
    with pytest.raises(InputError, match="duplicate"):
        read_questions(InputConfig(path=str(tmp_path / "q.jsonl"), fields={"id": "level", "question": "problem"}))
    with pytest.raises(InputError, match="row 0: field 'question'"):
        read_questions(InputConfig(path=str(tmp_path / "q.jsonl")))
    with pytest.raises(InputError, match="does not exist"):
        read_questions(InputConfig(path=str(tmp_path / "nope.jsonl")))
