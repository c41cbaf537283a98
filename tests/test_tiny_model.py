"""The locally made tiny model: deterministic, Qwen-style tokens and template, loads in transformers."""

import hashlib
from pathlib import Path

from s1ray.tiny_model import make_tiny_model


def _digest(d: Path) -> dict[str, str]:
    return {
        f: hashlib.sha256((d / f).read_bytes()).hexdigest()
        for f in ("model.safetensors", "tokenizer.json", "config.json")
    }


def test_same_seed_same_files_other_seed_other_weights(tmp_path, tiny_model_dir):
    a = make_tiny_model(tmp_path / "a", seed=0)
    c = make_tiny_model(tmp_path / "c", seed=1)
    assert _digest(a) == _digest(Path(tiny_model_dir))  # the session's model was made with seed 0
    assert _digest(a)["model.safetensors"] != _digest(c)["model.safetensors"]


def test_tokenizer_and_model_load(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1, special
    text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are Qwen")
    assert text.endswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(tok.encode("Wait, x = \\frac{1}{2} ünï")) == "Wait, x = \\frac{1}{2} ünï"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    assert model.config.head_dim if hasattr(model.config, "head_dim") else True
    out = model(torch.tensor([tok.encode("hello")]))
    assert out.logits.shape[-1] == len(tok)
