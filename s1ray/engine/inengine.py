"""Budget forcing inside vLLM's sampler: one engine request per answer.

:class:`BudgetForcingLogitsProcessor` is a vLLM v1 custom logits processor, registered engine-wide
when the ``AsyncLLM`` is built; a request opts in by carrying its forcing settings in
``SamplingParams.extra_args[PAYLOAD_KEY]`` (see :func:`forcing_payload`). Requests without it
(plain vLLM, the rounds backend) pass through untouched.

Each opted-in request keeps the *same* pure :class:`~s1ray.engine.budget.BudgetForcer` the rounds
backend uses. Invariant: the forcer's ``sequence`` extends the request's output tokens, and what
it holds beyond them are the ids still to force, one per step. Each step, per row:

1. account the tokens sampled since the last step (``feed`` for model tokens; forced ones are
   already in the sequence);
2. if ids are pending, force the next one (every other logit -inf);
3. else, while thinking, decide whether the model *would* end thinking now -- greedy: an end
   trigger is the argmax; sampling: a draw with the row's own seeded RNG against the triggers'
   probability under the request's temperature. If it would, feed the forcer a trigger: it drops
   it and appends the continuation ("Wait") or the end-of-thinking ids, which step 2 forces from
   the next step on (so the trigger never enters the sequence). If not, the triggers are masked
   and vLLM samples from the rest, i.e. from the model's distribution given "no stop".
4. once the answer cap is reached (forcer DONE), force the end-of-turn id, a stop token.

Right after a continuation the rounds backend asks vLLM for ``min_tokens=1``, which masks its stop
ids (the triggers and the EOS ids); the processor masks the same set there.

The processor runs after vLLM's built-in min-tokens and logit-bias processors and before
penalties, temperature and top-k/top-p (``vllm/v1/sample/sampler.py``): exact for greedy and for
temperature sampling without top-k/top-p/penalties; :func:`in_engine_supports` sends the rest to
rounds. ``docs/forcing.md`` has the table.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch

from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
from vllm.v1.sample.sampler import Sampler

from s1ray.engine.budget import Phase
from s1ray.engine.forcing import PAYLOAD_KEY, ForcedRow, forcer_from_payload

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

PROCESSOR_FQCN = "s1ray.engine.inengine:BudgetForcingLogitsProcessor"
WORKER_EXTENSION_FQCN = "s1ray.engine.inengine.ForcingWorkerExtension"  # a dotted name, unlike the processor's
# Finished requests' forcers are kept this long (oldest dropped first) for the frontend to read
# their Wait count; bounded so requests nobody asks about cannot grow the worker's memory.
MAX_RECORDS = 1 << 15


# -- the processor ----------------------------------------------------------------------------------
_PROCESSORS: "weakref.WeakSet[BudgetForcingLogitsProcessor]" = weakref.WeakSet()


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """Budget forcing for the requests whose ``extra_args`` carry :data:`PAYLOAD_KEY`."""

    def __init__(self, vllm_config: "VllmConfig", device: torch.device, is_pin_memory: bool):
        self.rows: dict[int, ForcedRow] = {}  # batch index -> row
        self.records: OrderedDict[str, ForcedRow] = OrderedDict()  # request key -> row, finished too
        self.device = device
        self._id_tensors: dict[tuple[int, ...], torch.Tensor] = {}  # trigger/mask id sets, made once
        _PROCESSORS.add(self)

    @classmethod
    def validate_params(cls, sampling_params: "SamplingParams") -> None:
        p = (sampling_params.extra_args or {}).get(PAYLOAD_KEY)
        if p is None:
            return
        missing = {"key", "thinking_end", "triggers", "continuation", "answer_stop", "min_tokens", "max_tokens",
                   "num_waits", "max_answer_tokens", "greedy", "temperature", "seed"} - set(p)
        if missing:
            raise ValueError(f"extra_args.{PAYLOAD_KEY}: missing {sorted(missing)}")
        forcer_from_payload(p)  # raises BudgetError (a ValueError) naming a bad budget field

    def is_argmax_invariant(self) -> bool:
        return False  # it forces and masks tokens, so greedy decoding changes

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, _prompt, out in batch_update.added:
            p = (params.extra_args or {}).get(PAYLOAD_KEY) if params is not None else None
            if p is None:
                self.rows.pop(index, None)
                continue
            row = self.records.get(p["key"])
            if row is None:
                row = self.records[p["key"]] = ForcedRow(p, out, params.all_stop_token_ids)
                while len(self.records) > MAX_RECORDS:
                    self.records.popitem(last=False)
            else:  # back after preemption: same history, a new live list
                row.out = out
                self.records.move_to_end(p["key"])
            self.rows[index] = row
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if rb is not None and direction is MoveDirectionality.SWAP:
                self.rows[a] = rb

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

    def _ids(self, ids: tuple[int, ...], device) -> torch.Tensor:
        t = self._id_tensors.get(ids)
        if t is None:
            t = self._id_tensors[ids] = torch.tensor(ids, device=device)
        return t

    def pop_waits(self, keys: list[str]) -> dict[str, int]:
        found = {}
        for k in keys:
            row = self.records.pop(k, None)
            if row is not None:
                found[k] = row.forcer.num_waits
        return found


class ForcingWorkerExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``): the frontend reads, by
    ``collective_rpc``, how many continuations a finished request got -- the one fact its
    output ids cannot tell (a model may write "Wait" itself)."""

    def s1ray_forcing_waits(self, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for proc in list(_PROCESSORS):
            found.update(proc.pop_waits([k for k in keys if k not in found]))
        return found
