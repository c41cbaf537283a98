"""The fused chunked loss (LM head + cross-entropy per chunk) against the plain full-logits loss:
same loss and same gradients for every parameter, with the -100 mask and padding."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from s1ray.train.data import IGNORE  # noqa: E402
from s1ray.train.loss import batch_ce_sum, linear_ce_sum, resolve_loss_impl  # noqa: E402


def _model(dtype, tie: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=tie)
    return Qwen2ForCausalLM(cfg).to(dtype).train()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 512, (2, 40), generator=g)
    labels = ids.clone()
    labels[:, :9] = IGNORE  # the prompt
    labels[1, 30:] = IGNORE  # padding of the shorter row
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _plain_mean(model, b):
    """The plain path: full logits, fp32, mean over the labelled next tokens."""
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1), ignore_index=IGNORE
    )


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("chunk", [7, 16, 1000])
def test_fused_chunked_equals_the_plain_loss_and_gradients(tie, chunk):
    model, b = _model(torch.float32, tie), _batch()
    n = int((b["labels"][:, 1:] != IGNORE).sum())
    ref = _plain_mean(model, b)
    ref_grads = _grads(model, ref)
    for impl in ("fused_chunked", "logits"):
        got = batch_ce_sum(model, b, impl, chunk) / n
        assert got.item() == pytest.approx(ref.item(), rel=1e-6), impl
        grads = _grads(model, got)
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], rtol=1e-5, atol=1e-6, msg=f"{impl}: {name}")


def test_bf16_fused_matches_the_plain_loss_within_bf16_tolerance():
    model, b = _model(torch.bfloat16, True), _batch()
    n = int((b["labels"][:, 1:] != IGNORE).sum())
    ref = _plain_mean(model, b)
    ref_grads = _grads(model, ref)
    got = batch_ce_sum(model, b, "fused_chunked", 8) / n
    assert got.item() == pytest.approx(ref.item(), rel=1e-3)
    grads = _grads(model, got)
    for name, g in grads.items():
        torch.testing.assert_close(g.float(), ref_grads[name].float(), rtol=2e-2, atol=2e-3, msg=name)


def test_no_labelled_token_gives_zero_and_still_reaches_the_head():
    model, b = _model(torch.float32, False), _batch()
    b["labels"][:] = IGNORE
    loss = batch_ce_sum(model, b, "fused_chunked", 8)
    assert loss.item() == 0.0
    loss.backward()
    assert model.lm_head.weight.grad is not None and float(model.lm_head.weight.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("labelled", [True, False])
def test_the_head_module_is_called_once_whatever_the_number_of_chunks(labelled):
    """ZeRO-3 gathers the head's weight per call: every rank must make the same calls."""
    head = torch.nn.Linear(8, 50, bias=False)
    calls = []
    head.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape))
    for tokens in (10, 100):
        calls.clear()
        h = torch.randn(1, tokens, 8, requires_grad=True)
        labels = torch.randint(0, 50, (1, tokens)) if labelled else torch.full((1, tokens), IGNORE)
        linear_ce_sum(h, head, labels, chunk_size=16).backward()
        assert calls == [torch.Size([tokens, 8])]
    assert "forward" not in vars(head)  # the module's own forward is back


def test_auto_fuses_only_where_a_sequence_spans_several_chunks():
    assert resolve_loss_impl("auto", 32768, 1024) == "fused_chunked"
    assert resolve_loss_impl("auto", 512, 1024) == "logits"
    assert resolve_loss_impl("logits", 32768, 1024) == "logits"


@pytest.mark.gpu
def test_liger_kernel_on_cuda_matches_the_torch_reference():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("liger_kernel")
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 1000, bias=False).cuda()
    h = torch.randn(2, 300, 64, device="cuda", requires_grad=True)
    labels = torch.randint(0, 1000, (2, 300), device="cuda")
    labels[:, :50] = IGNORE
    fused = linear_ce_sum(h, head, labels, 64, use_liger=True)
    (gh_l,) = torch.autograd.grad(fused, h)
    ref = linear_ce_sum(h, head, labels, 64, use_liger=False)
    (gh_r,) = torch.autograd.grad(ref, h)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-4)
    torch.testing.assert_close(gh_l, gh_r, rtol=1e-3, atol=1e-5)
