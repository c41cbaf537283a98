"""Incremental detokenization for streaming (prefix-offset method, as vLLM/TGI do it).

Decoding only the tokens since the last emitted chunk keeps each step O(window), and holding back a trailing U+FFFD
avoids emitting half of a multi-byte character.
"""

from __future__ import annotations


class IncrementalDecoder:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, new_ids: list[int]) -> str:
        """Add ids; return the text that became final."""
        self.ids.extend(new_ids)
        dec = self.tokenizer.decode
        prefix = dec(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=False)
        full = dec(self.ids[self.prefix_offset :], skip_special_tokens=False)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            # Re-anchor: the next prefix decodes exactly the tokens already emitted.
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return full[len(prefix) :]
        return ""
