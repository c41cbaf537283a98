"""What the in-engine forcing processor adds to one decode step, measured without an engine.

The processor's ``apply`` is timed on a batch of B rows (vocab V, float32 logits on the CPU), each
step appending the token a plain argmax/sample would give, so the rows walk through thinking,
Waits and the answer as in a run. Printed: microseconds per step, and per row-step, for greedy
and temperature-1 rows; compare with a decode step of the model (``bench_engine.py``).
Run: ``python bench/bench_forcing_step.py [-b 16] [-v 151936] [--steps 400]``.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401 -- sets the environment and the import path


def measure(batch: int, vocab: int, steps: int, temperature: float) -> float:
    import torch
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from s1ray.engine.budget import FormatIds, ThinkingBudget
    from s1ray.engine.forcing import PAYLOAD_KEY, forcing_payload
    from s1ray.engine.inengine import BudgetForcingLogitsProcessor

    ids = FormatIds(thinking_end=(203, 1, 685, 203), end_triggers=((1,), (2,), (0,)), continuation=(436,),
                    answer_stop=frozenset({0, 2}))
    proc = BudgetForcingLogitsProcessor(None, torch.device("cpu"), False)
    outs = [[] for _ in range(batch)]
    added = []
    for i in range(batch):
        p = forcing_payload(f"r{i}", ids, ThinkingBudget(steps // 2, steps // 2 + 8, max_answer_tokens=steps),
                            temperature, i)
        added.append((i, SamplingParams(extra_args={PAYLOAD_KEY: p}), [], outs[i]))
    proc.update_state(BatchUpdate(batch_size=batch, removed=[], added=added, moved=[]))
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    for step in range(steps + 1):
        logits = torch.randn(batch, vocab, generator=gen)
        logits[:, 1] += 4.0  # the model tries to stop now and then
        t = time.perf_counter()
        logits = proc.apply(logits)
        if step:  # the first step pays one-off costs (lazy imports, caches)
            total += time.perf_counter() - t
        for out, tok in zip(outs, logits.argmax(-1).tolist()):
            out.append(tok)
    return 1e6 * total / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-b", "--batch", type=int, default=16)
    p.add_argument("-v", "--vocab", type=int, default=2000)
    p.add_argument("--steps", type=int, default=400)
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)  # as vLLM's CPU worker binds one core
    for temp in (0.0, 1.0):
        us = measure(a.batch, a.vocab, a.steps, temp)
        print(f"temperature {temp:g}: {us:7.1f} us per step for {a.batch} rows (V={a.vocab}), "
              f"{us / a.batch:5.1f} us per row-step")


if __name__ == "__main__":
    main()
