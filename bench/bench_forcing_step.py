"""What the in-engine forcing processor adds to one decode step, measured without an engine.

The processor's ``apply`` is timed on a batch of B rows (vocab V, float32 logits on the CPU), each
step appending the token a plain argmax/sample would give, so the rows walk through thinking,
Waits and the answer as in a run. The current processor and the one before its greedy decision
was batched (``bench/_forcing_before.py``) walk the same logits, in alternating order, each step,
and must force the same tokens. Printed: microseconds per step, per row-step, and before / now, for greedy and
temperature-1 rows; compare with a decode step of the model (``bench_engine.py``).
Run: ``python bench/bench_forcing_step.py [-b 16] [-v 151936] [--steps 400]``.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401 -- sets the environment and the import path


def _processor(cls, batch: int, steps: int, temperature: float):
    import torch
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from s1ray.engine.budget import FormatIds, ThinkingBudget
    from s1ray.engine.forcing import PAYLOAD_KEY, forcing_payload

    ids = FormatIds(thinking_end=(203, 1, 685, 203), end_triggers=((1,), (2,), (0,)), continuation=(436,),
                    answer_stop=frozenset({0, 2}))
    proc = cls(None, torch.device("cpu"), False)
    outs = [[] for _ in range(batch)]
    added = []
    for i in range(batch):
        p = forcing_payload(f"r{i}", ids, ThinkingBudget(steps // 2, steps // 2 + 8, max_answer_tokens=steps),
                            temperature, i)
        added.append((i, SamplingParams(extra_args={PAYLOAD_KEY: p}), [], outs[i]))
    proc.update_state(BatchUpdate(batch_size=batch, removed=[], added=added, moved=[]))
    return proc, outs


def measure(batch: int, vocab: int, steps: int, temperature: float) -> dict[str, float]:
    """Microseconds per step of the current processor and of the one before, on the same logits."""
    import torch
    from _forcing_before import ProcessorBefore

    from s1ray.engine.inengine import BudgetForcingLogitsProcessor

    runs = {"now": _processor(BudgetForcingLogitsProcessor, batch, steps, temperature),
            "before": _processor(ProcessorBefore, batch, steps, temperature)}
    gen = torch.Generator().manual_seed(0)
    total = dict.fromkeys(runs, 0.0)
    for step in range(steps + 1):
        logits = torch.randn(batch, vocab, generator=gen)
        logits[:, 1] += 4.0  # the model tries to stop now and then
        chosen = {}
        order = list(runs) if step % 2 else list(runs)[::-1]  # alternate, so neither always goes first
        for name in order:
            proc, outs = runs[name]
            mine = logits.clone()
            t = time.perf_counter()
            mine = proc.apply(mine)
            if step:  # the first step pays one-off costs (lazy imports, caches)
                total[name] += time.perf_counter() - t
            chosen[name] = mine.argmax(-1).tolist()
            for out, tok in zip(outs, chosen[name]):
                out.append(tok)
        assert chosen["now"] == chosen["before"], f"step {step}: the two processors forced different tokens"
    return {name: 1e6 * t / steps for name, t in total.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-b", "--batch", type=int, default=16)
    p.add_argument("-v", "--vocab", type=int, default=2000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--out", default=str(_common.RESULTS / "bench_forcing_step.json"))
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)  # as vLLM's CPU worker binds one core
    rows = []
    for temp in (0.0, 1.0):
        us = measure(a.batch, a.vocab, a.steps, temp)
        rows.append({"temperature": temp, "us_per_step": us["now"], "us_per_step_before": us["before"],
                     "us_per_row_step": us["now"] / a.batch, "before_over_now": us["before"] / us["now"]})
        print(f"temperature {temp:g}: {us['now']:7.1f} us per step for {a.batch} rows (V={a.vocab}), "
              f"{us['now'] / a.batch:5.1f} us per row-step; before {us['before']:7.1f} us "
              f"({us['before'] / us['now']:.2f}x)")
    _common.write_json(a.out, {"bench": "forcing_step", "batch": a.batch, "vocab": a.vocab, "steps": a.steps,
                               "table": rows,
                               "ratios": {f"before / now, temperature {r['temperature']:g}": r["before_over_now"]
                                          for r in rows}})


if __name__ == "__main__":
    main()
