"""s1ray.console: a stage's output (Python, C-level writes, child processes) goes to its log; the
terminal gets only what say() prints; a traceback that ends a stage is in its log."""

import os
import subprocess
import sys

import pytest

from s1ray.console import captured, say, tail


def test_everything_a_stage_prints_goes_to_its_log(tmp_path, capfd):
    log = tmp_path / "logs" / "stage.log"
    with captured(log):
        print("python print")
        print("python stderr", file=sys.stderr)
        os.write(1, b"fd one\n")
        os.write(2, b"fd two\n")
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"],
                       check=True)
        say("for the person")
        assert os.environ["RAY_COLOR_PREFIX"] == "0"  # Ray's forwarded lines uncoloured in the log
    out, err = capfd.readouterr()
    assert out == "for the person\n" and err == ""
    text = log.read_text()
    for line in ("python print", "python stderr", "fd one", "fd two", "child out", "child err"):
        assert line in text, line
    assert "for the person" not in text
    print("after")  # the streams are back
    assert capfd.readouterr().out == "after\n"


def test_nested_capture_switches_log_and_back(tmp_path, capfd):
    outer, inner = tmp_path / "outer.log", tmp_path / "inner.log"
    with captured(outer):
        print("one")
        with captured(inner):
            print("two")
            say("still the terminal")
        print("three")
    assert outer.read_text().split() == ["one", "three"]
    assert inner.read_text().split() == ["two"]
    assert capfd.readouterr().out == "still the terminal\n"


def test_a_failing_stage_leaves_its_traceback_in_the_log(tmp_path, capfd):
    log = tmp_path / "x.log"
    with pytest.raises(RuntimeError, match="boom"):
        with captured(log):
            raise RuntimeError("boom")
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert "Traceback" in log.read_text() and tail(log, 1) == ["RuntimeError: boom"]
