"""SFT data: rendering as the engine does, the loss mask, over-long examples, packing, schedule,
and padded vs packed giving the same loss (fp32, real tiny Qwen2)."""

from __future__ import annotations

import numpy as np
import pytest

from s1ray.formats import get_format
from s1ray.train.data import (
    IGNORE,
    DataError,
    Renderer,
    collate,
    collate_packed,
    collate_padded,
    pack_examples,
    prepare_examples,
    step_micro_batches,
    steps_per_epoch,
    total_steps,
)
from s1ray.train.toy import toy_records

Q, T, A = "What is 12 + 30?", "Let me add. 12 plus 30 is 42.\n", "The answer is 42."


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def labelled(r):
    return [i for i, lab in enumerate(r.labels) if lab != IGNORE]


def span(r, *names):
    return [i for n in names for i in range(*r.spans[n])]


@pytest.mark.parametrize("fmt", ["s1", "think-tags"])
def test_mask_labels_exactly_thinking_answer_and_stop_tokens(tok, fmt):
    r = Renderer(tok, get_format(fmt)).render(Q, T, A)
    assert labelled(r) == span(r, "thinking", "end", "answer", "eot")
    assert all(r.labels[i] == r.input_ids[i] for i in labelled(r))
    # the stop token that is labelled is the end of turn, and the template's newline is not
    assert [r.input_ids[i] for i in range(*r.spans["eot"])] == [tok.convert_tokens_to_ids("<|im_end|>")]
    assert tok.decode(r.input_ids[slice(*r.spans["thinking"])]) == T.strip()
    assert tok.decode(r.input_ids[slice(*r.spans["answer"])]) == " " + A


def test_mask_without_delimiters_is_exactly_thinking_plus_answer(tok):
    r = Renderer(tok, get_format("s1"), label_delimiters=False).render(Q, T, A)
    assert labelled(r) == span(r, "thinking", "answer")


def test_render_matches_the_engine_token_for_token(tok):
    """Prompt ids = the engine's prompt; delimiter + prefix ids = what the engine inserts."""
    from s1ray.engine.planner import RequestPlanner, tokenize_format
    from s1ray.engine.types import GenerationRequest

    fmt = get_format("s1")
    r = Renderer(tok, fmt).render(Q, T, A)
    planner = RequestPlanner(tok, fmt, 4096)
    prompt = planner.prompt_ids(GenerationRequest(messages=[{"role": "user", "content": Q}]))
    assert r.input_ids[: r.spans["prompt"][1]] == prompt
    inserted = r.input_ids[r.spans["end"][0] : r.spans["prefix"][1]]
    assert tuple(inserted) == tokenize_format(tok, fmt).thinking_end
    text = tok.decode(r.input_ids)
    assert "<|im_start|>assistant\n<|im_start|>think\n" + T.strip() + "\n<|im_start|>answer\nFinal Answer: " + A in text


def test_s1_reference_answer_prefix(tok):
    r = Renderer(tok, get_format("s1"), answer_prefix="Answer: ").render(Q, T, A)
    assert tok.decode(r.input_ids).endswith("\n<|im_start|>answer\nAnswer: " + A + "<|im_end|>\n")


def test_overlong_are_counted_dropped_or_truncated(tok):
    recs = toy_records(12, seed=1)
    recs[3]["thinking"] = "wait " * 400
    recs[7]["attempt"] = "so the answer is " * 60
    r = Renderer(tok, get_format("s1"))
    lens = [len(r.render(x["question"], x["thinking"], x["attempt"]).input_ids) for x in recs]
    block = 256
    assert lens[3] > block and lens[7] > block and sum(n > block for n in lens) == 2
    d = prepare_examples(recs, r, block_size=block, overlong="drop")
    assert (d.stats["overlong"], d.stats["dropped"], d.stats["truncated"], d.stats["kept"]) == (2, 2, 0, 10)
    t = prepare_examples(recs, r, block_size=block, overlong="truncate")
    assert (t.stats["overlong"], t.stats["truncated"], t.stats["kept"]) == (2, 2, 12)
    assert t.stats["truncated_mid_answer"] == 1  # #7 is cut inside its answer; #3 inside thinking
    assert max(len(x) for x in t.input_ids) == block


def test_missing_fields_and_too_small_dataset(tok):
    r = Renderer(tok, get_format("s1"))
    with pytest.raises(DataError, match="thinking_field"):
        prepare_examples([{"question": "q", "trace": "t", "attempt": "a"}], r, block_size=512)
    with pytest.raises(DataError, match="global_batch_size"):
        total_steps(3, 4, 1, None)


def test_pack_examples_first_fit_decreasing():
    lengths = [300, 200, 500, 100, 250, 400, 50]
    bins = pack_examples(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    assert len(bins) == 4  # sum 1800 > 3 x 512: four is optimal
    with pytest.raises(ValueError):
        pack_examples([600], 512)


def test_schedule_is_a_pure_partition_of_each_global_batch(tok):
    recs = toy_records(24, seed=2)
    data = prepare_examples(recs, Renderer(tok, get_format("s1")), block_size=512)
    G, world, micro = 8, 2, 2
    assert steps_per_epoch(len(data.rows), G) == 3
    seen = []
    for step in range(6):
        per_rank = [step_micro_batches(data, 7, step, G, world, micro, r) for r in range(world)]
        assert all(len(mbs) == G // (world * micro) and all(len(mb) == micro for mb in mbs) for mbs in per_rank)
        rows = [row for mbs in per_rank for mb in mbs for row in mb]
        assert len(set(rows)) == G
        seen.append(sorted(rows))
        # the same step always gives the same batches (resume needs no replay)
        assert per_rank == [step_micro_batches(data, 7, step, G, world, micro, r) for r in range(world)]
    epoch0 = sorted(r for s in seen[:3] for r in s)
    assert epoch0 == sorted(set(epoch0)) and len(epoch0) == 24  # each row once per epoch
    assert seen[:3] != seen[3:]  # reshuffled per epoch


def test_collate_padded_and_packed_shapes():
    ids = [np.arange(5, dtype=np.int32), np.arange(3, dtype=np.int32)]
    labs = [np.array([IGNORE, 1, 2, 3, 4], dtype=np.int32), np.array([IGNORE, 1, 2], dtype=np.int32)]
    p = collate_padded(ids, labs, pad_id=0)
    assert p["input_ids"].shape == (2, 5) and p["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0]
    assert p["labels"].tolist()[1] == [IGNORE, 1, 2, IGNORE, IGNORE]
    k = collate_packed(ids, labs)
    assert k["input_ids"].shape == (1, 8) and "attention_mask" not in k
    assert k["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padded_and_packed_give_the_same_loss(tiny_model_dir, tok, attn):
    import torch
    from transformers import AutoModelForCausalLM

    from s1ray.train.modeling import model_forward_logits, token_ce_sum

    recs = toy_records(6, seed=3)
    r = Renderer(tok, get_format("s1"))
    padded = prepare_examples(recs, r, block_size=1024, packing=False)
    packed = prepare_examples(recs, r, block_size=1024, packing=True)
    assert len(packed.rows) == 1 and len(set(len(x) for x in padded.input_ids)) > 1  # real padding
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn).eval()

    def loss(data, rows):
        b = collate(data, rows, pad_id=tok.pad_token_id)
        with torch.no_grad():
            ce = token_ce_sum(model_forward_logits(model, b), b["labels"], chunk_size=64)
        n = int((b["labels"][:, 1:] != IGNORE).sum())
        return ce.item() / n, n

    lp, n_pad = loss(padded, list(range(len(padded.rows))))
    lk, n_pack = loss(packed, [0])
    assert n_pad == n_pack
    assert lp == pytest.approx(lk, rel=1e-5)
    # and not trivially: letting packed examples attend to each other changes the loss
    b = collate(packed, [0], pad_id=tok.pad_token_id)
    with torch.no_grad():
        leak = token_ce_sum(model(input_ids=b["input_ids"]).logits, b["labels"]).item() / n_pack
    assert abs(leak - lk) > 1e-4


def test_chunked_loss_equals_plain_cross_entropy():
    import torch
    import torch.nn.functional as F

    from s1ray.train.modeling import token_ce_sum

    torch.manual_seed(0)
    logits = torch.randn(2, 9, 11, requires_grad=True)
    labels = torch.randint(0, 11, (2, 9))
    labels[0, :3] = IGNORE
    got = token_ce_sum(logits, labels, chunk_size=4)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum")
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    g1 = torch.autograd.grad(got, logits)[0]
    g2 = torch.autograd.grad(ref, logits)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


@pytest.mark.gpu
def test_packed_flash_attention_varlen_matches_padded_sdpa(tiny_model_dir, tok):
    """The GPU path: padding-free packed rows through flash-attention varlen (cu_seq_lens from
    position_ids) give the padded loss (bf16, so a looser tolerance)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("flash_attn")
    from transformers import AutoModelForCausalLM

    from s1ray.train.modeling import model_forward_logits, token_ce_sum

    recs = toy_records(6, seed=3)
    r = Renderer(tok, get_format("s1"))
    padded = prepare_examples(recs, r, block_size=1024, packing=False)
    packed = prepare_examples(recs, r, block_size=1024, packing=True)

    def loss(data, rows, attn):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, attn_implementation=attn).cuda()
        b = {k: v.cuda() for k, v in collate(data, rows, pad_id=tok.pad_token_id).items()}
        with torch.no_grad():
            return token_ce_sum(model_forward_logits(model, b), b["labels"]).item() / int((b["labels"][:, 1:] != IGNORE).sum())

    assert loss(packed, [0], "flash_attention_2") == pytest.approx(loss(padded, list(range(len(padded.rows))), "sdpa"), rel=2e-2)
