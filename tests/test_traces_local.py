"""The local teacher path for real: Ray Data's LLM batch API + vLLM's CPU build + the tiny model.

25 questions (24 from MATH500, converted to the question schema, and one whose prompt is longer
than the engine's context) x 2 samples. Checks: every (id, sample) comes out exactly once, the
over-long one with its error; thinking/answer token counts equal the student
tokenizer's; a rerun generates nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from s1ray.config import load_config
from s1ray.data.schema import question_from_record
from s1ray.traces.config import TracesConfig
from s1ray.traces.job import run_traces
from s1ray.traces.output import read_manifest, read_traces

from evaldata import eval_file

ROOT = Path(__file__).resolve().parents[1]



@pytest.mark.ray
@pytest.mark.vllm
def test_local_ray_data_vllm_cpu(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    qs = []
    with eval_file("math500").open() as f:
        for line in f:
            qs.append(question_from_record(json.loads(line), {"question": "problem"}, source="math500"))
            if len(qs) == 24:
                break
    long_q = question_from_record({"id": "too-long", "question": " ".join(["number"] * 3000)}, source="synthetic")
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q.to_dict()) + "\n" for q in [*qs, long_q]))

    cfg = load_config(TracesConfig, Path(__file__).resolve().parents[1] / "configs/traces/tiny_local.yaml", [
        f"input.path={qfile}", "input.limit=null", "input.fields={}", "input.source=null", f"output_dir={tmp_path / 'out'}",
        f"teacher.engine.model={tiny_model_dir}", "teacher.name=tiny", "sampling.max_tokens=24",
        "samples_per_question=2", "shard_size=16",
    ])
    res = run_traces(cfg)

    rows = read_traces(cfg.output_dir)
    want = sorted((q.id, s) for q in [*qs, long_q] for s in range(2))
    assert sorted((r["id"], r["sample_index"]) for r in rows) == want  # each exactly once
    assert (res.generated, res.errors, res.ok) == (50, 2, 48)
    assert [s["rows"] for s in read_manifest(cfg.output_dir)["shards"]] == [16, 16, 16, 2]

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = {q.id: q for q in qs}
    for r in rows:
        if r["id"] == "too-long":
            assert re.fullmatch(r"prompt is \d+ tokens; the engine's max_model_len is 1024", r["error"]), r["error"]
            continue
        assert r["error"] is None, r["error"]
        assert r["teacher_model"] == "tiny" and r["question"] == ref[r["id"]].question
        assert r["reference_answer"] == ref[r["id"]].answer and r["source"] == "math500"
        assert r["reasoning_format"] == "s1"
        assert r["thinking_tokens"] == len(tok.encode(r["thinking"], add_special_tokens=False))
        assert r["answer_tokens"] == len(tok.encode(r["answer"], add_special_tokens=False))
        assert r["thinking_tokens"] == len(tok.encode(r["thinking"]))  # no special tokens added either way
        assert 0 < r["completion_tokens"] <= 24 and r["prompt_tokens"] > 0
        assert r["finish_reason"] in ("stop", "length")
        if r["finish_reason"] == "length":
            assert r["completion_tokens"] == 24
        assert r["latency_s"] > 0
    assert sum(r["finish_reason"] == "length" for r in rows) > 0

    again = run_traces(cfg)  # resume: all done, nothing generated (no Ray started)
    assert (again.already_done, again.generated) == (50, 0)


def _tiny_cfg(tmp_path, tiny_model_dir, *over):
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n" for i in range(3)))
    return load_config(TracesConfig, Path(__file__).resolve().parents[1] / "configs/traces/tiny_local.yaml", [
        f"input.path={qfile}", "input.fields={}", f"output_dir={tmp_path / 'out'}",
        f"teacher.engine.model={tiny_model_dir}", *over])


# The timeout case runs in a child process: Ray Data's executor thread, still waiting for the
# engine actor when the job gives up and shuts Ray down, lives on in its process and may start a
# new local Ray there (Ray's auto-init), which once killed the shared pytest process at its end.
_TIMEOUT_CHILD = """
import sys
import ray
from s1ray.config import load_config
from s1ray.traces.config import TracesConfig
from s1ray.traces.job import TracesJobError, run_traces
cfg = load_config(TracesConfig, sys.argv[1], sys.argv[2:])
try:
    run_traces(cfg)
except TracesJobError as exc:
    print("ERROR:", exc)
print("RAY_UP_AFTER:", ray.is_initialized(), flush=True)
"""


@pytest.mark.ray
def test_engine_that_cannot_be_placed_fails_fast(tmp_path, tiny_model_dir):
    """No GPU on this cluster: a clear error at once, not a job that waits forever."""
    import subprocess
    import sys

    from s1ray.traces.job import TracesJobError

    cfg = _tiny_cfg(tmp_path, tiny_model_dir, "teacher.device=cuda")
    with pytest.raises(TracesJobError, match=r"has \{GPU: 0\}, one cuda engine .* needs \{GPU: 1\}"):
        run_traces(cfg)
    # With the check off (autoscaling clusters), the start-up timeout catches it instead.
    over = [f"input.path={tmp_path / 'questions.jsonl'}", "input.fields={}", f"output_dir={tmp_path / 'out'}",
            f"teacher.engine.model={tiny_model_dir}", "teacher.device=cuda", "teacher.check_resources=false",
            "teacher.startup_timeout_s=5"]
    child = subprocess.run([sys.executable, "-c", _TIMEOUT_CHILD, str(ROOT / "configs/traces/tiny_local.yaml"), *over],
                           capture_output=True, text=True, timeout=600)
    out = child.stdout
    (err,) = [ln for ln in out.splitlines() if ln.startswith("ERROR:")] or [""]
    assert "no row came back within teacher.startup_timeout_s=5 s" in err, (out, child.stderr[-3000:])
    assert "RAY_UP_AFTER: False" in out, out  # the job shut down the Ray it started
    assert read_traces(tmp_path / "out") == []
