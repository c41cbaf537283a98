"""What a person sees while a job runs: a progress bar and a one-line summary per stage.

Everything else a stage prints -- Ray, Ray Data, Ray Train, vLLM, DeepSpeed, Hugging Face, the
lines Ray forwards from workers and actors -- goes to that stage's log file. :func:`captured`
points file descriptors 1 and 2 at the log (so C++ logs and child processes land there too) and
keeps duplicates of the terminal for :func:`say` and :func:`progress`.

Outside :func:`captured` nothing is redirected: :func:`say` prints to stdout and :func:`progress`
draws on stderr, so library calls from tests and notebooks behave as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_terminal: dict[str, IO[str]] = {}  # "out" / "err": the terminal while output is captured


def say(line: str) -> None:
    """Print one line for the person at the terminal (never into a log file)."""
    print(line, file=_terminal.get("out", sys.stdout), flush=True)


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar on the terminal. Drawn only on an interactive terminal: in a job's log or a
    pipe, a redrawn bar is noise, and the stage's summary line says the same."""
    from tqdm.auto import tqdm

    stream = _terminal.get("err", sys.stderr)
    interactive = enabled and hasattr(stream, "isatty") and stream.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not interactive, leave=False,
                dynamic_ncols=True)


def capturing() -> bool:
    return bool(_terminal)


@contextlib.contextmanager
def captured(log_path: str | Path) -> Iterator[Path]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, and ``sys.stdout`` /
    ``sys.stderr``) to ``log_path``, appending.

    Nested calls switch to the inner log and back. A traceback that ends the block is written
    to the log before the exception goes on, so the log says what the console line summarises.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    outermost = not _terminal
    if outermost:
        # The encoding of the streams they stand in for: a strict locale codec would make tqdm's
        # block characters raise, and tqdm silently disables a bar whose writes raise.
        for key, fd, stream in (("out", 1, sys.stdout), ("err", 2, sys.stderr)):
            _terminal[key] = os.fdopen(os.dup(fd), "w", buffering=1, errors="backslashreplace",
                                       encoding=getattr(stream, "encoding", None) or "utf-8")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # Python-level streams too: under pytest or in a notebook sys.stdout is not file descriptor 1.
    streams = sys.stdout, sys.stderr
    log_stream = open(log_path, "a", buffering=1, errors="replace")
    sys.stdout = sys.stderr = log_stream
    # Ray colours the "(Worker pid=...)" prefix of the lines it forwards; in a file that is noise.
    color = os.environ.get("RAY_COLOR_PREFIX")
    os.environ["RAY_COLOR_PREFIX"] = "0"
    try:
        yield log_path
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        raise
    finally:
        log_stream.flush()
        sys.stdout, sys.stderr = streams
        log_stream.close()
        if color is None:
            os.environ.pop("RAY_COLOR_PREFIX", None)
        else:
            os.environ["RAY_COLOR_PREFIX"] = color
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        if outermost:
            for stream in _terminal.values():
                stream.close()
            _terminal.clear()


def tail(log_path: str | Path, lines: int = 5) -> list[str]:
    """The last non-empty lines of a log (a failed stage shows them under its summary line)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]
