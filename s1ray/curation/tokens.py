"""Thinking length in *student* tokens (s1 counted with Qwen2.5's tokenizer).

Trace-job rows already carry ``thinking_tokens`` counted with the configured student tokenizer;
this counts the others (files from elsewhere, the miniature) when ``quality.length.tokenizer``
names one. The tokenizer loads once per process (Ray worker).
"""

from __future__ import annotations

import functools
from collections.abc import Callable


@functools.lru_cache(maxsize=2)
def _tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def student_token_counter(name: str) -> Callable[[str], int]:
    tok = _tokenizer(name)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False)) if text else 0

    return count
