"""The in-engine forcing processor as it was before its per-step work was cut (rows re-checked
every step, a feed per id, index tensors made per mask group), kept as the baseline of
``bench_forcing_step.py`` and as the reference ``tests/test_forcing_vllm.py`` compares the
current one to, step for step."""

from __future__ import annotations

import torch
from vllm.v1.sample.sampler import Sampler

from s1ray.engine.budget import Phase
from s1ray.engine.forcing import ForcedRow, _seq_at, _seq_len
from s1ray.engine.inengine import BudgetForcingLogitsProcessor


class RowBefore(ForcedRow):
    """ForcedRow's per-step accounting before ``action``/``room``: every id fed, every step re-read."""

    __slots__ = ()

    def sync(self) -> None:
        f, out = self.forcer, self.out
        while self.seen < len(out):
            if f.phase is Phase.DONE:
                self.seen = len(out)
                return
            if self.seen >= _seq_len(f):
                f.feed(out[self.seen])
            self.seen += 1

    def pending(self) -> int | None:
        f = self.forcer
        if f.phase is Phase.DONE:
            return self.eot
        return _seq_at(f, self.seen) if self.seen < _seq_len(f) else None

    def stop_thinking(self) -> int:
        self.forcer.feed(self.trigger_key[0])
        return self.pending()


class ProcessorBefore(BudgetForcingLogitsProcessor):
    def update_state(self, batch_update) -> None:
        super().update_state(batch_update)
        for row in self.rows.values():
            row.__class__ = RowBefore  # same slots: only the per-step methods differ

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        force_rows, force_ids = [], []
        decide: dict[tuple[int, ...], list[tuple[int, ForcedRow]]] = {}
        masks: dict[tuple[int, ...], list[int]] = {}
        for i, row in self.rows.items():
            row.sync()
            nxt = row.pending()
            if nxt is not None:
                force_rows.append(i)
                force_ids.append(nxt)
            elif row.forcer.phase is Phase.THINKING:
                if row.forcer.round_min_tokens():  # just after a continuation: as min_tokens=1
                    masks.setdefault(row.after_wait_mask, []).append(i)
                else:
                    decide.setdefault(row.trigger_key, []).append((i, row))
        top = None  # the batch's greedy argmax, taken once, before any row is masked or forced
        for trig, members in decide.items():
            if top is None and any(row.greedy for _, row in members):
                top = Sampler.greedy_sample(logits).tolist()  # vLLM's own argmax: ties break as its sampler's
            for (i, row), stop in zip(members, self._would_stop(logits, trig, top, members)):
                if stop:
                    force_rows.append(i)
                    force_ids.append(row.stop_thinking())
                else:
                    masks.setdefault(trig, []).append(i)
        for ids, rows in masks.items():
            r = torch.tensor(rows, device=logits.device).unsqueeze(1)
            logits[r, self._ids(ids, logits.device)] = float("-inf")
        if force_rows:
            r = torch.tensor(force_rows, device=logits.device)
            logits.index_fill_(0, r, float("-inf"))
            logits[r, torch.tensor(force_ids, device=logits.device)] = 0.0
        return logits

    def _would_stop(self, logits: torch.Tensor, trig: tuple[int, ...], top: list[int] | None, members) -> list[bool]:
        """Per row: would the model end thinking at this step (before any masking)? ``top``: the
        batch's greedy argmax (when a greedy row is among ``members``)."""
        out = [False] * len(members)
        sampled = []
        trig_set = set(trig)
        for k, (i, row) in enumerate(members):
            if row.greedy:
                out[k] = top[i] in trig_set
            else:
                sampled.append(k)
        if sampled:
            idx = torch.tensor([members[k][0] for k in sampled], device=logits.device)
            temp = torch.tensor([members[k][1].temperature for k in sampled], device=logits.device)
            scaled = logits[idx] / temp.unsqueeze(1)
            tid = self._ids(trig, logits.device)
            p_stop = torch.exp(torch.logsumexp(scaled[:, tid], -1) - torch.logsumexp(scaled, -1)).tolist()
            for k, p in zip(sampled, p_stop):
                out[k] = members[k][1].rng.random() < p
        return out
