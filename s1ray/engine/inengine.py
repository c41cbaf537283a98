"""Budget forcing inside vLLM's sampler: one engine request per answer.

:class:`BudgetForcingLogitsProcessor` is a vLLM v1 custom logits processor, registered engine-wide
when the ``AsyncLLM`` is built; a request opts in by carrying its forcing settings in
``SamplingParams.extra_args[PAYLOAD_KEY]`` (see :func:`forcing_payload`). Requests without it
(plain vLLM, the rounds backend) pass through untouched.

Each opted-in request keeps the *same* pure :class:`~s1ray.engine.budget.BudgetForcer` the rounds
backend uses. Invariant: the forcer's ``sequence`` extends the request's output tokens, and what
it holds beyond them are the ids still to force, one per step. Each step, per row:

1. account the tokens sampled since the last step (``feed`` for model tokens; forced ones are
   already in the sequence; a row thinking freely, between events, appends them in one call:
   ``ForcedRow.sync``);
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

import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch

from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
from vllm.v1.sample.sampler import Sampler

from s1ray.engine.forcing import PAYLOAD_KEY, Action, ForcedRow, forcer_from_payload

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
        # What forcing costs the engine, measured where it happens: seconds inside apply, and the
        # engine's step period (apply to apply) while forced rows are in the batch.
        self.timing = {"apply_s": 0.0, "step_s": 0.0, "steps": 0}
        self._last_apply: float | None = None
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
            self._last_apply = None  # the period resumes with the next forced row
            return logits
        start = time.perf_counter()
        logits = self._force(logits)
        t = self.timing
        t["apply_s"] += time.perf_counter() - start
        if self._last_apply is not None:
            t["step_s"] += start - self._last_apply
            t["steps"] += 1
        self._last_apply = start
        return logits

    def _force(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.contiguous()  # a no-op for vLLM's [rows, vocab] logits; the fills index it flat
        vocab = logits.shape[1]
        force_rows, force_at = [], []  # rows whose every other id is -inf, and their forced (flat) positions
        mask_at = []  # flat positions set to -inf
        greedy, sampled = [], []  # the deciding rows
        for i, row in self.rows.items():
            row.sync()
            action = row.action
            if action is Action.DECIDE:
                (greedy if row.greedy else sampled).append((i, row))
            elif action is Action.FORCE:
                force_rows.append(i)
                force_at.append(i * vocab + row.next_id)
            elif action is Action.AFTER_WAIT:  # as min_tokens=1 after a continuation
                mask_at.extend([i * vocab + t for t in row.after_wait_mask])
        stops = self._greedy_stops(logits, greedy) + self._sampled_stops(logits, sampled)
        for (i, row), stop in zip(greedy + sampled, stops):
            if stop:
                force_rows.append(i)
                force_at.append(i * vocab + row.stop_thinking())
            else:
                mask_at.extend([i * vocab + t for t in row.trigger_key])
        if mask_at or force_rows:  # one host-to-device copy for every index of this step
            m, f = len(mask_at), len(force_rows)
            idx = torch.tensor(mask_at + force_rows + force_at, device=logits.device)
            flat = logits.view(-1)
            if m:
                flat.index_fill_(0, idx[:m], float("-inf"))
            if f:
                logits.index_fill_(0, idx[m : m + f], float("-inf"))
                flat.index_fill_(0, idx[m + f :], 0.0)
        return logits

    @staticmethod
    def _greedy_stops(logits: torch.Tensor, members: list) -> list[bool]:
        """Per greedy row: is an end trigger vLLM's own argmax (ties break as its sampler's)?"""
        if not members:
            return []
        top = Sampler.greedy_sample(logits).tolist()  # the whole batch at once, before any masking
        return [top[i] in row.triggers for i, row in members]

    def _sampled_stops(self, logits: torch.Tensor, members: list) -> list[bool]:
        """Per sampled row: a draw from its own RNG against the triggers' probability under its
        temperature, i.e. the model's own stop decision. One softmax over the whole batch (no
        gathered copy): rows that do not decide cost a little arithmetic, not an extra pass."""
        if not members:
            return []
        scaled = logits
        if any(row.temperature != 1.0 for _, row in members):
            temps = [1.0] * logits.shape[0]
            for i, row in members:
                temps[i] = row.temperature
            scaled = logits / torch.tensor(temps, device=logits.device).unsqueeze(1)
        probs = torch.softmax(scaled, -1)
        p_stop: dict[tuple[int, ...], list[float]] = {}
        for trig in {row.trigger_key for _, row in members}:  # one format: one trigger set
            p_stop[trig] = probs[:, self._ids(trig, logits.device)].sum(-1).tolist()
        return [row.rng.random() < p_stop[row.trigger_key][i] for i, row in members]

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

    def s1ray_forcing_timing(self) -> dict:
        """Totals since start: seconds in the processor's ``apply``, and the engine's step
        period summed over the steps between two applies with forced rows (``steps`` of them)."""
        out = {"apply_s": 0.0, "step_s": 0.0, "steps": 0}
        for proc in list(_PROCESSORS):
            for k, v in proc.timing.items():
                out[k] += v
        return out

    def s1ray_forcing_waits(self, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for proc in list(_PROCESSORS):
            found.update(proc.pop_waits([k for k in keys if k not in found]))
        return found
