"""A training progress bar on the driver. ``TorchTrainer.fit`` blocks and hands back nothing
until the run ends, so rank 0 posts (step, total, loss) to a small actor and a driver thread
draws them. Only made when a bar is drawn (an interactive terminal)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from s1ray.console import progress


class StepCounter:
    """Ray actor (0 CPUs): the newest step rank 0 finished."""

    def __init__(self):
        self.state: tuple[int, int | None, float | None] = (0, None, None)

    def set(self, step: int, total: int, loss: float) -> None:
        self.state = (step, total, loss)

    def get(self) -> tuple[int, int | None, float | None]:
        return self.state


def _follow(counter, bar, stop: threading.Event) -> None:
    import ray

    while not stop.wait(1.0):
        try:
            step, total, loss = ray.get(counter.get.remote(), timeout=10)
        except Exception:  # a slow or restarting cluster: the bar waits, training goes on
            continue
        if total and bar.total != total:
            bar.total = total
        bar.n = step
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.refresh()


@contextlib.contextmanager
def step_bar(desc: str) -> Iterator[object | None]:
    """Yields the counter actor to hand to the workers, or None when no bar is drawn."""
    bar = progress(None, desc, unit="step")
    if bar.disable:
        bar.close()
        yield None
        return
    import ray

    counter = ray.remote(num_cpus=0)(StepCounter).remote()
    stop = threading.Event()
    thread = threading.Thread(target=_follow, args=(counter, bar, stop), daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        stop.set()
        thread.join(timeout=15)
        bar.close()
        ray.kill(counter)
