"""SFT data, pure (no Ray, no DeepSpeed): render, label, filter, pack, schedule, collate.

The records themselves come from :func:`s1ray.dataio.load_records`; bad data is a
:class:`s1ray.dataio.DataError`.

Rendering (what the model sees) matches what the engine does at inference, token for token:

    prompt   = chat_template([system?, user: question], add_generation_prompt=True) + thinking_start
    thinking = the trace                                     (model-generated at inference)
    end      = format.thinking_end                            e.g. "\\n<|im_start|>answer\\n"
    prefix   = answer_prefix                                  e.g. "Final Answer:" (engine-inserted)
    answer   = the attempt                                    (model-generated at inference)
    eot      = the chat template's end of the assistant turn, e.g. "<|im_end|>" + "\\n"

Each segment is tokenized on its own and the ids are concatenated, as the engine builds its
sequence from separately tokenized pieces (so no token straddles a delimiter; s1's reference
tokenized one joined string).

Loss mask (labels = -100 elsewhere):
  * always labelled: the thinking tokens and the answer tokens;
  * ``label_delimiters=True`` (default) also labels the end-of-thinking delimiter and the
    end-of-turn token (``<|im_end|>``): a model that never gets a gradient on them never learns
    to stop thinking or answering, and budget forcing relies on the model *trying* to stop.
    s1's reference trains on the whole assistant completion, which includes both;
  * never labelled: system/user turns, the assistant header, thinking_start and the answer
    prefix (the engine inserts these itself) and the template's trailing newline.
With ``label_delimiters=False`` exactly the thinking + answer tokens carry labels.

Packing: examples are bin-packed (first-fit decreasing) into rows of at most ``block_size``
tokens; a packed micro-batch is flattened into ONE row with ``position_ids`` restarting at 0 for
every example and no attention mask. transformers turns restarting position ids into a
block-diagonal causal mask (sdpa/eager, the CPU path) or into ``cu_seq_lens`` for
flash-attention varlen (the GPU path), so examples never attend to each other and there are no
pad tokens at all. The first token of every example is a prompt token (label -100), so the
prediction across an example boundary is never in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s1ray.dataio import DataError
from s1ray.formats import ReasoningFormat, render_prompt, single_token_ids
from s1ray.train.loss import IGNORE  # the loss defines the label mask; re-exported for the data's users

_SENTINEL = "\u2063S1RAY\u2063"


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):  # s1K v1.0 stores thinking_trajectories as a list
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


# -- rendering --------------------------------------------------------------------------------
@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    spans: dict[str, tuple[int, int]]  # segment -> [start, end) in input_ids


class Renderer:
    """Turns (question, thinking, attempt) into token ids + labels (see the module docstring)."""

    def __init__(
        self,
        tokenizer,
        fmt: ReasoningFormat,
        system_prompt: str | None = None,
        answer_prefix: str | None = None,
        label_delimiters: bool = True,
    ):
        self.tok = tokenizer
        self.fmt = fmt
        self.system_prompt = system_prompt
        self.answer_prefix = fmt.answer_prefix if answer_prefix is None else answer_prefix
        self.label_delimiters = label_delimiters
        self.end_ids = self.encode(fmt.thinking_end)
        self.prefix_ids = self.encode(self.answer_prefix) if self.answer_prefix else []
        # End of the assistant turn as the chat template writes it, e.g. "<|im_end|>\n".
        text = self.tok.apply_chat_template(
            self._messages("q") + [{"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        if _SENTINEL not in text:
            raise DataError("the tokenizer's chat template drops the assistant message; cannot render SFT data")
        suffix = self.encode(text.split(_SENTINEL, 1)[1])
        stops = single_token_ids(self.tok, fmt.answer_stop)
        cut = next((k + 1 for k, t in enumerate(suffix) if t in stops), None)
        if cut is None:  # no known stop token: fall back to the tokenizer's eos
            eos = self.tok.eos_token_id
            suffix, cut = ([eos], 1) if eos is not None else (suffix, len(suffix))
        self.eot_ids, self.eot_rest_ids = suffix[:cut], suffix[cut:]

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def _messages(self, question: str) -> list[dict[str, str]]:
        msgs = [{"role": "user", "content": question}]
        if self.system_prompt is not None:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

    def prompt_text(self, question: str) -> str:
        """Exactly the engine's prompt: both render with :func:`s1ray.formats.render_prompt`."""
        return render_prompt(self.tok, self._messages(question), self.fmt.thinking_start)

    def render(self, question: str, thinking: str, attempt: str) -> Rendered:
        thinking, attempt = _text(thinking).strip(), _text(attempt).strip()
        if self.answer_prefix and not self.answer_prefix[-1].isspace() and attempt:
            attempt = " " + attempt  # "Final Answer:" + " 42": the model's next token carries the space
        segments = [
            ("prompt", self.encode(self.prompt_text(_text(question))), False),
            ("thinking", self.encode(thinking), True),
            ("end", self.end_ids, self.label_delimiters),
            ("prefix", self.prefix_ids, False),
            ("answer", self.encode(attempt), True),
            ("eot", self.eot_ids, self.label_delimiters),
            ("eot_rest", self.eot_rest_ids, False),
        ]
        ids: list[int] = []
        labels: list[int] = []
        spans = {}
        for name, seg, labelled in segments:
            spans[name] = (len(ids), len(ids) + len(seg))
            ids.extend(seg)
            labels.extend(seg if labelled else [IGNORE] * len(seg))
        return Rendered(ids, labels, spans)


# -- preparing a dataset ----------------------------------------------------------------------
@dataclass
class PreparedData:
    """Tokenized examples and the rows (one example, or a packed block) that batches are made of."""

    input_ids: list[np.ndarray]
    labels: list[np.ndarray]
    rows: list[list[int]]
    block_size: int
    packed: bool
    stats: dict[str, Any] = field(default_factory=dict)

    def row_len(self, r: int) -> int:
        return sum(len(self.input_ids[i]) for i in self.rows[r])


def prepare_examples(
    records: list[dict],
    renderer: Renderer,
    *,
    block_size: int,
    overlong: str = "drop",
    packing: bool = False,
    question_field: str = "question",
    thinking_field: str = "thinking",
    attempt_field: str = "attempt",
) -> PreparedData:
    """Render every record; count (and drop or truncate) those longer than ``block_size``; pack."""
    if not records:
        raise DataError("dataset: no examples")
    missing = [f for f in (question_field, thinking_field, attempt_field) if f not in records[0]]
    if missing:
        raise DataError(
            f"dataset: field(s) {missing} not in the data (columns: {sorted(records[0])}); "
            "set dataset.question_field / thinking_field / attempt_field"
        )
    ids_out, labels_out = [], []
    n_over = n_trunc = n_trunc_answer = n_dropped = 0
    lengths = []
    for rec in records:
        r = renderer.render(rec[question_field], rec[thinking_field], rec[attempt_field])
        n = len(r.input_ids)
        lengths.append(n)
        if n > block_size:
            n_over += 1
            if overlong == "drop":
                n_dropped += 1
                continue
            n_trunc += 1
            if block_size < r.spans["eot"][1]:  # the cut falls before the answer is complete
                if block_size > r.spans["end"][0]:
                    n_trunc_answer += 1
            r.input_ids, r.labels = r.input_ids[:block_size], r.labels[:block_size]
            if all(lab == IGNORE for lab in r.labels):
                n_dropped += 1
                continue
        ids_out.append(np.asarray(r.input_ids, dtype=np.int32))
        labels_out.append(np.asarray(r.labels, dtype=np.int32))
    if not ids_out:
        raise DataError(f"dataset: all {len(records)} examples are longer than block_size ({block_size})")
    kept = [len(x) for x in ids_out]
    rows = pack_examples(kept, block_size) if packing else [[i] for i in range(len(ids_out))]
    stats = {
        "examples": len(records),
        "kept": len(ids_out),
        "overlong": n_over,
        "dropped": n_dropped,
        "truncated": n_trunc,
        "truncated_mid_answer": n_trunc_answer,
        "overlong_policy": overlong,
        "max_len": int(max(lengths)),
        "mean_len": float(np.mean(lengths)),
        "tokens": int(sum(kept)),
        "label_tokens": int(sum(int((lab != IGNORE).sum()) for lab in labels_out)),
        "rows": len(rows),
        "block_size": block_size,
        "packing": packing,
    }
    if packing:
        stats["pack_fill"] = float(sum(kept) / (len(rows) * block_size))
    return PreparedData(ids_out, labels_out, rows, block_size, packing, stats)


def pack_examples(lengths: list[int], block_size: int) -> list[list[int]]:
    """First-fit-decreasing bin packing of example indices into blocks of <= block_size tokens.

    Deterministic (ties broken by index). Every length must be <= block_size.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    room = np.empty(0, dtype=np.int64)
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > block_size:
            raise ValueError(f"example {i} has {n} tokens > block_size {block_size}")
        fits = np.flatnonzero(room >= n)
        if fits.size:
            b = int(fits[0])
            room[b] -= n
            bins[b].append(i)
        else:
            room = np.append(room, block_size - n)
            bins.append([i])
    return [sorted(b) for b in bins]


# -- schedule: which rows each rank sees at each step ------------------------------------------
def steps_per_epoch(n_rows: int, global_batch_size: int) -> int:
    """Full global batches per epoch (the last partial batch is dropped; each epoch reshuffles)."""
    return n_rows // global_batch_size


def total_steps(n_rows: int, global_batch_size: int, epochs: int, max_steps: int | None) -> int:
    spe = steps_per_epoch(n_rows, global_batch_size)
    if spe == 0:
        raise DataError(
            f"global_batch_size: {global_batch_size} rows per step but the dataset has only {n_rows} "
            "rows (examples, or packed blocks when packing)"
        )
    return max_steps if max_steps is not None else spe * epochs


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def step_micro_batches(
    data: PreparedData, seed: int, step: int, global_batch_size: int, world: int, micro: int, rank: int
) -> list[list[int]]:
    """The micro-batches (lists of row ids) rank ``rank`` runs at optimizer step ``step`` (0-based).

    A pure function of its arguments, so resuming at step s needs no replay of the data loader.
    The global batch is balanced by tokens across ranks (longest rows first, each to the rank
    with the fewest tokens that still has room), then each rank's rows are grouped into
    micro-batches of similar lengths (less padding when micro > 1).
    """
    spe = steps_per_epoch(len(data.rows), global_batch_size)
    epoch, k = divmod(step, spe)
    order = epoch_order(len(data.rows), seed, epoch)
    batch = [int(r) for r in order[k * global_batch_size : (k + 1) * global_batch_size]]
    per_rank = global_batch_size // world
    lens = {r: data.row_len(r) for r in batch}
    load = [0] * world
    mine: list[list[int]] = [[] for _ in range(world)]
    for r in sorted(batch, key=lambda r: (-lens[r], r)):
        w = min((w for w in range(world) if len(mine[w]) < per_rank), key=lambda w: (load[w], w))
        mine[w].append(r)
        load[w] += lens[r]
    rows = mine[rank]  # already longest first
    return [rows[i : i + micro] for i in range(0, len(rows), micro)]


# -- collate ----------------------------------------------------------------------------------
def collate(data: PreparedData, rows: list[int], pad_id: int) -> dict[str, Any]:
    """One micro-batch as model inputs.

    Not packed: one example per row, right-padded to the longest (attention_mask only when padding
    exists). Packed: every example of every row flattened into a single row with position_ids
    restarting per example (padding-free; see the module docstring).
    """
    examples = [i for r in rows for i in data.rows[r]]
    if data.packed:
        return collate_packed([data.input_ids[i] for i in examples], [data.labels[i] for i in examples])
    return collate_padded([data.input_ids[i] for i in examples], [data.labels[i] for i in examples], pad_id)


def collate_padded(ids: list[np.ndarray], labels: list[np.ndarray], pad_id: int) -> dict[str, Any]:
    import torch

    n = max(len(x) for x in ids)
    inp = torch.full((len(ids), n), pad_id, dtype=torch.long)
    lab = torch.full((len(ids), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for b, (x, y) in enumerate(zip(ids, labels)):
        inp[b, : len(x)] = torch.from_numpy(x.astype(np.int64))
        lab[b, : len(y)] = torch.from_numpy(y.astype(np.int64))
        mask[b, : len(x)] = 1
    out = {"input_ids": inp, "labels": lab}
    if not bool(mask.all()):
        out["attention_mask"] = mask
    return out


def collate_packed(ids: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, Any]:
    import torch

    inp = torch.from_numpy(np.concatenate(ids).astype(np.int64))[None]
    lab = torch.from_numpy(np.concatenate(labels).astype(np.int64))[None]
    pos = torch.from_numpy(np.concatenate([np.arange(len(x)) for x in ids]).astype(np.int64))[None]
    return {"input_ids": inp, "labels": lab, "position_ids": pos}


def batch_tokens(batch: dict[str, Any]) -> int:
    """Real (non-pad) tokens in a collated batch."""
    m = batch.get("attention_mask")
    return int(m.sum()) if m is not None else int(batch["input_ids"].numel())


def seq_lengths(data: PreparedData, rows: list[int]) -> list[int]:
    return [len(data.input_ids[i]) for r in rows for i in data.rows[r]]

