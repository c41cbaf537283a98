"""Data loading: the shipped AIME24/MATH500 files, a made-up GPQA-format fixture, custom files."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from s1ray.eval import data
from s1ray.eval.data import DataError, EvalItem, load_dataset_items
from s1ray.answers import grade

GPQA_COLS = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
             "Incorrect Answer 3", "High-level domain"]


def fake_gpqa_rows(n=12):
    """Made-up questions in GPQA's column layout (the real set must never be committed)."""
    return [
        {"Record ID": f"rec{i:03d}", "Question": f"  Which made-up particle number {i} is stable? ",
         "Correct Answer": f"right-{i}", "Incorrect Answer 1": f"wrong-a-{i}",
         "Incorrect Answer 2": f"wrong-b-{i}", "Incorrect Answer 3": f"wrong-c-{i}",
         "High-level domain": "Physics"}
        for i in range(n)
    ]


@pytest.fixture
def gpqa_csv(tmp_path):
    p = tmp_path / "gpqa_diamond.csv"
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=GPQA_COLS)
        w.writeheader()
        w.writerows(fake_gpqa_rows())
    return p


_DATA = data.default_data_dir()
# The real MATH500/AIME24 files: CI keeps them in S1RAY_DATA_DIR (../shared/data); s1ray ships none.
needs_data = pytest.mark.skipif(not (_DATA and (_DATA / "math500.jsonl").is_file() and (_DATA / "aime24.jsonl").is_file()),
                                reason="S1RAY_DATA_DIR does not hold math500.jsonl and aime24.jsonl")


# ------------------------------------------------------------------ the real files
@needs_data
def test_shipped_math500_and_aime24():
    m = load_dataset_items("math500")
    a = load_dataset_items("aime24")
    assert len(m) == 500 and len(a) == 30
    assert all(isinstance(i, EvalItem) for i in m + a)
    assert {i.kind for i in m} == {"math"} and {i.kind for i in a} == {"aime"}
    assert {i.dataset for i in m} == {"math500"}
    assert len({i.id for i in m}) == 500 and len({i.id for i in a}) == 30
    assert all(i.question.strip() and i.answer for i in m + a)
    assert m[0].id == "test/precalculus/807.json" and m[0].question.startswith("Convert the point $(0,3)$")
    assert a[0].answer == "204" and all(x.answer.isdigit() for x in a)
    assert len(load_dataset_items("math500", limit=3)) == 3


def test_data_dir_override(tmp_path, monkeypatch):
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"id": "x", "problem": "1+1?", "answer": "002"}) + "\n")
    monkeypatch.setenv("S1RAY_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    [item] = load_dataset_items("aime24")
    assert (item.id, item.answer, item.kind) == ("x", "002", "aime")
    monkeypatch.setenv("S1RAY_DATA_DIR", str(tmp_path / "nowhere"))

    def no_hub(name, *a):  # a fault at the network boundary: this machine has no hub
        raise data.HubError(f"could not load {name!r}", "ConnectionError: offline")

    monkeypatch.setattr(data, "load_hub", no_hub)
    with pytest.raises(DataError, match="no math500.jsonl in S1RAY_DATA_DIR"):
        load_dataset_items("math500")


def test_no_data_dir_by_default_and_a_missing_set_says_the_three_ways(tmp_path):
    """No S1RAY_DATA_DIR and the hub offline (a plain clone without network), in a fresh process
    (the hub libraries read the offline switch on import): one line naming the config field and
    the three ways to supply the set."""
    code = textwrap.dedent("""
        from s1ray.eval import data
        assert data.default_data_dir() is None
        try:
            data.load_dataset_items("math500", where="datasets[1]")
        except data.DataError as exc:
            print(exc)
    """)
    env = {k: v for k, v in os.environ.items() if k != "S1RAY_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))  # an empty cache
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    msg = out.stdout.strip()
    assert "\n" not in msg and msg.startswith("datasets[1]: eval set 'math500' not found"), msg
    for way in ("`path:`", "S1RAY_DATA_DIR is not set", "S1RAY_DATA_DIR (a folder holding math500.jsonl)",
                "HuggingFaceH4/MATH-500", "the hub has no copy reachable"):
        assert way in msg


def test_a_missing_path_names_the_field(tmp_path):
    with pytest.raises(DataError, match=r"datasets\.path: eval set 'aime24': file .*nope\.jsonl.* does not exist"):
        load_dataset_items("aime24", path=tmp_path / "nope.jsonl")


def test_resolution_order_path_then_data_dir_then_hub(tmp_path, monkeypatch):
    """An explicit path wins over S1RAY_DATA_DIR, which wins over the hub; the hub is asked
    (under its public id, with its own id column) only when neither has the set."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"id": "p", "problem": "mine?", "answer": "1"}) + "\n")
    (tmp_path / "math500.jsonl").write_text(json.dumps({"id": "d", "problem": "dir?", "answer": "2"}) + "\n")
    monkeypatch.setenv("S1RAY_DATA_DIR", str(tmp_path))
    calls = []
    hub_row = {"unique_id": "test/algebra/1.json", "problem": "hub?", "answer": "3"}
    monkeypatch.setattr(data, "load_hub", lambda *a: calls.append(a) or [hub_row])
    assert [i.id for i in load_dataset_items("math500", path=mine)] == ["p"]
    assert [i.id for i in load_dataset_items("math500")] == ["d"]
    assert calls == []
    monkeypatch.delenv("S1RAY_DATA_DIR")
    [item] = load_dataset_items("math500")
    assert (item.id, item.question, item.kind) == ("test/algebra/1.json", "hub?", "math")
    assert calls == [("HuggingFaceH4/MATH-500", None, "test")]
    load_dataset_items("aime24")
    assert calls[-1] == ("HuggingFaceH4/aime_2024", None, "train")


# ------------------------------------------------------------------ GPQA
def test_gpqa_fixture_loads_shuffles_and_grades(gpqa_csv):
    items = load_dataset_items("gpqa_diamond", path=gpqa_csv, seed=0)
    assert len(items) == 12 and {i.kind for i in items} == {"mcq"}
    for it in items:
        assert it.id.startswith("rec")
        assert it.question.startswith("Which made-up particle") and it.question.endswith(data.MCQ_INSTRUCTION)
        for L in "ABCD":
            assert f"\n({L}) " in it.question
        # the gold letter points at the correct text
        n = int(it.id[3:])
        assert f"({it.answer}) right-{n}\n" in it.question
        assert it.meta["choices"]["ABCD".index(it.answer)] == f"right-{n}"
        # letter grading
        assert grade(f"The answer is ({it.answer}).", it.answer) == (it.answer, True)
        wrong = next(L for L in "ABCD" if L != it.answer)
        assert grade(f"Final Answer: {wrong}", it.answer) == (wrong, False)
        assert grade(f"\\boxed{{{it.answer}}}", it.answer)[1]


def test_gpqa_shuffle_is_deterministic_by_seed_and_id(gpqa_csv, tmp_path):
    a = load_dataset_items("gpqa_diamond", path=gpqa_csv, seed=0)
    b = load_dataset_items("gpqa_diamond", path=gpqa_csv, seed=0)
    c = load_dataset_items("gpqa_diamond", path=gpqa_csv, seed=1)
    assert [(i.question, i.answer) for i in a] == [(i.question, i.answer) for i in b]
    assert [i.question for i in a] != [i.question for i in c]
    # The order depends on (seed, id), not on the row's position: reversed rows, same shuffles.
    rows = fake_gpqa_rows()[::-1]
    p = tmp_path / "rev.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rev = {i.id: i for i in load_dataset_items("gpqa_diamond", path=p, seed=0)}
    assert all(rev[i.id].question == i.question and rev[i.id].answer == i.answer for i in a)
    # and the gold position is spread over the letters
    many = data.gpqa_items(fake_gpqa_rows(400), seed=3)
    counts = Counter(i.answer for i in many)
    assert set(counts) == set("ABCD") and min(counts.values()) > 60
    # pure function
    ch, gold = data.shuffle_choices("R", ["w1", "w2", "w3"], 5, "id-1")
    assert ch["ABCD".index(gold)] == "R" and sorted(ch) == ["R", "w1", "w2", "w3"]
    assert data.shuffle_choices("R", ["w1", "w2", "w3"], 5, "id-1") == (ch, gold)


@needs_data
def test_gpqa_missing_columns_and_no_hub_without_asking(tmp_path, monkeypatch):
    p = tmp_path / "bad.csv"
    p.write_text("Question,Correct Answer\nq,a\n")
    with pytest.raises(DataError, match="Incorrect Answer 1"):
        load_dataset_items("gpqa_diamond", path=p)
    calls = []
    monkeypatch.setattr(data, "load_hub", lambda *a: calls.append(a) or fake_gpqa_rows(3))
    load_dataset_items("math500", limit=2)
    assert calls == []  # a copy in S1RAY_DATA_DIR never touches the hub
    items = load_dataset_items("gpqa_diamond")  # no path: the hub, gated set, by name
    assert calls == [("Idavidrein/gpqa", "gpqa_diamond", "train")] and len(items) == 3


def test_hub_by_name_only_when_asked(monkeypatch):
    import datasets

    seen = {}

    def fake_load_dataset(name, config=None, split=None, token=None):
        seen.update(name=name, config=config, split=split)
        return [{"problem": "2+2?", "answer": "4", "unique_id": "u1"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    [it] = load_dataset_items("m500hub", hf_name="HuggingFaceH4/MATH-500", id_field="unique_id")
    assert seen == {"name": "HuggingFaceH4/MATH-500", "config": None, "split": "test"}
    assert (it.id, it.question, it.answer, it.kind) == ("u1", "2+2?", "4", "math")

    def broken(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(DataError, match="path:"):
        load_dataset_items("x", hf_name="some/set")


# ------------------------------------------------------------------ custom files
def test_custom_jsonl_with_field_names(tmp_path):
    p = tmp_path / "mine.jsonl"
    rows = [{"qid": "a", "q": "What is 6*7?", "gold": 42}, {"qid": "b", "q": "1/2 as a decimal?", "gold": "0.5"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    items = load_dataset_items("mine", path=p, question_field="q", answer_field="gold", id_field="qid",
                               prompt_template="{question}\nPut the final answer in \\boxed{{}}.")
    assert [i.id for i in items] == ["a", "b"] and items[0].answer == "42"
    assert items[0].question == "What is 6*7?\nPut the final answer in \\boxed{}."
    assert grade("so \\boxed{\\frac12}", items[1].answer)[1]
    # ids default to row numbers; kind may be set
    items = load_dataset_items("mine", path=p, question_field="q", answer_field="gold", id_field="nope", kind="aime")
    assert [i.id for i in items] == ["0", "1"] and items[0].kind == "aime"
    with pytest.raises(DataError, match="no field 'question'"):
        load_dataset_items("mine", path=p)
    p2 = tmp_path / "dup.jsonl"
    p2.write_text("".join(json.dumps({"id": 1, "question": q, "answer": 1}) + "\n" for q in "xy"))
    with pytest.raises(DataError, match="not unique"):
        load_dataset_items("dup", path=p2)


def test_file_formats_and_errors(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"data": [{"question": "q", "answer": "1"}]}))
    assert load_dataset_items("a", path=tmp_path / "a.json")[0].answer == "1"
    (tmp_path / "b.jsonl").write_text('{"question": "q", "answer": "1"}\n{oops\n')
    with pytest.raises(DataError, match="b.jsonl:2"):
        load_dataset_items("b", path=tmp_path / "b.jsonl")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        load_dataset_items("c", path=tmp_path / "c.txt")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset_items("d", path=tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="not a known eval set"):
        load_dataset_items("my_private_set")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"problem": "p", "answer": "3", "id": "z"}]), tmp_path / "e.parquet")
    assert load_dataset_items("e", path=tmp_path / "e.parquet")[0].id == "z"
