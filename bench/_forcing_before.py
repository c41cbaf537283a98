"""The in-engine forcing processor's ``apply`` as it was before its greedy decision was batched
(now one argmax over the whole batch, taken once, instead of a gathered copy of the deciding rows
per trigger set), kept as the baseline of ``bench_forcing_step.py`` and as the reference
``tests/test_forcing_vllm.py`` compares the new one to."""

from __future__ import annotations

import torch
from vllm.v1.sample.sampler import Sampler

from s1ray.engine.budget import Phase
from s1ray.engine.forcing import ForcedRow
from s1ray.engine.inengine import BudgetForcingLogitsProcessor


class ProcessorBefore(BudgetForcingLogitsProcessor):
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
        for trig, members in decide.items():
            stops = self._would_stop(logits, trig, self._ids(trig, logits.device), members)
            for (i, row), stop in zip(members, stops):
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
            t = torch.tensor(force_ids, device=logits.device)
            logits[r] = float("-inf")
            logits[r, t] = 0.0
        return logits

    @staticmethod
    def _would_stop(logits: torch.Tensor, trig: tuple[int, ...], tid: torch.Tensor, members) -> list[bool]:
        """Per row: would the model end thinking at this step (before any masking)?"""
        out = [False] * len(members)
        greedy = [k for k, (_, row) in enumerate(members) if row.greedy]
        sampled = [k for k, (_, row) in enumerate(members) if not row.greedy]
        if greedy:
            idx = torch.tensor([members[k][0] for k in greedy], device=logits.device)
            # vLLM's own greedy argmax, so ties break as the sampler's would
            top = Sampler.greedy_sample(logits[idx].contiguous()).tolist()
            trig_set = set(trig)
            for k, t in zip(greedy, top):
                out[k] = t in trig_set
        if sampled:
            idx = torch.tensor([members[k][0] for k in sampled], device=logits.device)
            temp = torch.tensor([members[k][1].temperature for k in sampled], device=logits.device)
            scaled = logits[idx] / temp.unsqueeze(1)
            p_stop = torch.exp(torch.logsumexp(scaled[:, tid], -1) - torch.logsumexp(scaled, -1)).tolist()
            for k, p in zip(sampled, p_stop):
                out[k] = members[k][1].rng.random() < p
        return out

