"""Stop strings on the answer: pure text matching, as OpenAI's ``stop`` defines it.

The answer text grows a token at a time. The earliest occurrence of any stop string ends the
answer there; the stop string itself is not part of the answer. While streaming, the last
``len(longest stop) - 1`` characters are held back, since they may be the start of a stop
string the next token completes.
"""

from __future__ import annotations

from collections.abc import Sequence


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to its earliest stop string, and that stop string (None if there is none)."""
    hits = [(i, s) for s in stops if (i := text.find(s)) >= 0]
    if not hits:
        return text, None
    i, s = min(hits)
    return text[:i], s


class StopMatcher:
    """The answer text so far, checked for stop strings as pieces arrive."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.matched: str | None = None

    def add(self, piece: str) -> bool:
        """Append decoded text; True once a stop string is found (the text is cut before it)."""
        if self.matched is not None:
            return True
        # Only a stop string that ends in the new piece can be new: search its possible starts.
        start = max(0, len(self.text) - self.hold)
        self.text += piece
        tail, matched = cut_at_stop(self.text[start:], self.stops)
        if matched is None:
            return False
        self.text, self.matched = self.text[:start] + tail, matched
        return True

    def safe_len(self, final: bool = False) -> int:
        """How much of ``text`` can be emitted: all once final or stopped, else all but the hold."""
        if final or self.matched is not None:
            return len(self.text)
        return max(0, len(self.text) - self.hold)
