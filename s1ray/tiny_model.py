"""Tiny Qwen2-architecture models made locally: no hub download, deterministic for a seed.

Tests and the quickstart need a real model that transformers and vLLM both load. This makes
one: a byte-level BPE tokenizer trained with ``tokenizers`` on a built-in synthetic corpus
(with Qwen's chat special tokens and a Qwen-style chat template) and a random-init
``Qwen2ForCausalLM``. Shapes default to what vLLM's CPU attention accepts (head_dim 64).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5's template, reduced to plain messages: a default system turn, then
# <|im_start|>role\ncontent<|im_end|>\n per message, then the assistant header.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = (
    "the a an of to and is in that it for as with on by this be are we let so then if not "
    "number sum product answer think step first second next now since therefore thus hence "
    "wait check again compute find solve value equal equals gives total remainder divide "
    "multiply add subtract square root prime integer fraction probability triangle circle "
    "area angle side length point line function equation solution case cases both each "
    "final question problem what how many which where when mod digit digits even odd"
).split()
_SNIPPETS = [
    "Final Answer:", "Answer:", "\\boxed{", "\\frac{", "}{", "^2", "\\sqrt{", "x =", "y =",
    "$", "(", ")", "+", "-", "*", "/", "=", ",", ".", ":", "Wait", "Let me", "So the answer is",
    "think", "answer", "user", "assistant", "system", "\n", "\n\n", DEFAULT_SYSTEM,
]


def _corpus(seed: int, lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        parts = []
        for _ in range(rng.randint(4, 24)):
            r = rng.random()
            if r < 0.55:
                parts.append(rng.choice(_WORDS))
            elif r < 0.8:
                parts.append(str(rng.randint(0, 999)))
            else:
                parts.append(rng.choice(_SNIPPETS))
        out.append(" ".join(parts))
    return out


@dataclass(frozen=True)
class TinyModelSpec:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2  # head_dim 64: vLLM's CPU attention refuses 16
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096


def build_tokenizer(seed: int, vocab_size: int):
    """Train a byte-level BPE with Qwen's special tokens; return a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(out_dir: str | Path, seed: int = 0, spec: TinyModelSpec | None = None) -> Path:
    """Write a random-init Qwen2 causal LM + tokenizer to ``out_dir``; return the path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed, spec.vocab_size)
    eos_ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=eos_ids[0],
        pad_token_id=eos_ids[1],
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=eos_ids, pad_token_id=eos_ids[1])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "s1ray_tiny.json").write_text(json.dumps({"seed": seed, **spec.__dict__}, indent=1))
    return out
