"""A toy s1K-style dataset (question / thinking / attempt), deterministic for a seed.

For tests, the CPU quickstart and the bench: arithmetic questions with repetitive "reasoning"
of varying length, so a tiny model's loss visibly falls within a few steps and lengths vary
enough for packing to matter.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def toy_records(n: int = 16, seed: int = 0, max_steps: int = 6) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        steps = " ".join(
            f"step {k}: add {a} and {b} then check the sum" for k in range(rng.randint(1, max_steps))
        )
        out.append(
            {
                "question": f"What is {a} + {b}?",
                "thinking": f"Let me think. {steps}. So {a} + {b} = {a + b}.",
                "attempt": f"The answer is {a + b}.",
            }
        )
    return out


def write_toy_dataset(path: str | Path, n: int = 16, seed: int = 0, max_steps: int = 6) -> Path:
    """Write ``n`` toy records as JSON lines (fields question, thinking, attempt)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in toy_records(n, seed, max_steps)))
    return p
