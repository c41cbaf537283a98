"""The trace shard writer: a shard counts as done only once the manifest lists it (pure I/O, no engine)."""

from __future__ import annotations

import json

import pytest

from s1ray.traces.output import MANIFEST, OutputMismatch, ShardWriter, read_traces

def _row(i: int, error: str | None = None) -> dict:
    from s1ray.traces.records import TRACE_COLUMNS

    r = {c: None for c in TRACE_COLUMNS}
    r.update(id=f"r{i}", sample_index=0, question="q", thinking="", answer="a", thinking_tokens=0,
             answer_tokens=1, attempts=1, error=error)
    return r


def test_shard_is_done_only_once_listed_in_the_manifest(tmp_path, monkeypatch):
    import s1ray.traces.output as out

    w = ShardWriter(tmp_path, "parquet", 2, {"g": 1})
    w.extend([_row(0), _row(1)])
    assert out.done_keys(tmp_path) == {("r0", 0), ("r1", 0)}

    def crash(loc, obj):  # the process dies after the shard file, before the manifest
        raise OSError("disk gone")

    monkeypatch.setattr(out, "write_manifest", crash)
    with pytest.raises(OSError):
        w.extend([_row(2), _row(3)])
    monkeypatch.undo()
    assert (tmp_path / "shard-00001.parquet").exists()  # written, but not listed: not done
    (tmp_path / ".shard-00002.parquet.tmp-1-abc").write_text("half a shard")  # a crashed temp file
    w2 = ShardWriter(tmp_path, "parquet", 2, {"g": 1})
    assert not list(tmp_path.glob(".*tmp*"))
    assert w2.done == {("r0", 0), ("r1", 0)}
    assert not w2.add(_row(0))  # already done: ignored
    w2.extend([_row(2), _row(3)])
    assert sorted(r["id"] for r in read_traces(tmp_path)) == ["r0", "r1", "r2", "r3"]
    assert json.loads((tmp_path / MANIFEST).read_text())["rows"] == 4
    with pytest.raises(OutputMismatch):
        ShardWriter(tmp_path, "parquet", 2, {"g": 2})


def test_jsonl_output(tmp_path):
    w = ShardWriter(tmp_path, "jsonl", 3, {"g": 1})
    w.extend([_row(0), _row(1, error="boom")])
    w.flush()
    rows = read_traces(tmp_path)
    assert [(r["id"], r["error"]) for r in rows] == [("r0", None), ("r1", "boom")]
    assert (tmp_path / "shard-00000.jsonl").exists()
