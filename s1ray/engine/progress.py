"""One request's output as text while the forcer runs: the streamed thinking and answer
chunks, stop strings on the answer, and the answer tokens' logprobs. Pure: needs only a
tokenizer (``decode``) and the forcer; the rounds engine feeds it every generated token.
"""

from __future__ import annotations

from s1ray.engine.budget import BudgetForcer, Phase, Signal
from s1ray.engine.detok import IncrementalDecoder
from s1ray.engine.stops import StopMatcher
from s1ray.engine.types import TokenLogprob


class ForcedOutput:
    def __init__(self, forcer: BudgetForcer, tokenizer, stop: tuple[str, ...] = (), logprobs: int | None = None,
                 chunks: bool = True):
        self.forcer = forcer
        self.tokenizer = tokenizer
        # Multi-token triggers may still be completed: hold that many thinking tokens back.
        self.holdback = max(len(t) for t in forcer.ids.end_triggers) - 1
        self._thinking_dec, self._answer_dec = IncrementalDecoder(tokenizer), IncrementalDecoder(tokenizer)
        self.answer = StopMatcher(stop)  # the answer's text, decoded a token at a time
        # ...where a stop string may end it or a stream shows it; otherwise the result decodes it once
        self.chunks = chunks
        self._decode_answer = chunks or bool(stop)
        self.top_k = logprobs
        self.logprobs: list[TokenLogprob] | None = [] if logprobs is not None else None
        self._emitted = {"thinking": 0, "answer": 0}

    def feed(self, tok: int, position: dict | None = None) -> Signal:
        """Feed one generated id (``position``: vLLM's ``{id: Logprob}`` for it, if requested)."""
        f = self.forcer
        in_answer, n = f.phase is Phase.ANSWER, f.answer_tokens
        sig = f.feed(tok)
        if in_answer and f.answer_tokens > n:  # an answer token, not the end of turn
            if self.logprobs is not None:
                self.logprobs.append(self.token_logprob(tok, position))
            if self._decode_answer and self.answer.add(self._answer_dec.push([tok])):
                sig = f.stop()
        return sig

    def flush(self, final: bool = False) -> list[tuple[str, str]]:
        """("thinking" | "answer", text) chunks that became final since the last flush (none
        without ``chunks``: nobody reads them)."""
        out = []
        if not self.chunks:
            return out
        toks, done = self.forcer.thinking_ids, self._emitted["thinking"]
        thinking = final or self.forcer.phase is not Phase.THINKING
        upto = len(toks) if thinking else max(done, len(toks) - self.holdback)
        if upto > done:
            text = self._thinking_dec.push(toks[done:upto])
            self._emitted["thinking"] = upto
            if text:
                out.append(("thinking", text))
        upto, done = self.answer.safe_len(final), self._emitted["answer"]
        if upto > done:
            out.append(("answer", self.answer.text[done:upto]))
            self._emitted["answer"] = upto
        return out

    def token_logprob(self, tok: int, position: dict | None) -> TokenLogprob:
        """From vLLM's ``{id: Logprob}`` at one position: the sampled id and the top ``k``."""
        dec = lambda t: self.tokenizer.decode([t], skip_special_tokens=False)  # noqa: E731
        position = position or {}
        chosen = position.get(tok)
        ranked = sorted(position.items(), key=lambda kv: -kv[1].logprob)[: self.top_k]
        top = [(dec(t), t, lp.logprob) for t, lp in ranked]
        return TokenLogprob(dec(tok), tok, chosen.logprob if chosen is not None else float("nan"), top)
