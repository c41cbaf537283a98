"""config.json contents of public models the shipped configs name, so ``plan`` works offline.

Copied from the models' published config.json files (architecture fields only). The s1 and
s1.1 fine-tunes keep their base model's architecture, so they map onto it (and are labelled so).
"""

from __future__ import annotations

QWEN25_32B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120,
    "intermediate_size": 27648, "num_hidden_layers": 64, "num_attention_heads": 40,
    "num_key_value_heads": 8, "vocab_size": 152064, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
}
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
    "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
}

# hub id -> (config.json, what the shape is)
SHIPPED: dict[str, tuple[dict, str]] = {
    "Qwen/Qwen2.5-32B-Instruct": (QWEN25_32B, "shipped config.json of Qwen/Qwen2.5-32B-Instruct"),
    "Qwen/Qwen2.5-32B": (QWEN25_32B, "shipped config.json of Qwen/Qwen2.5-32B"),
    "simplescaling/s1-32B": (QWEN25_32B, "shipped shape of its base, Qwen/Qwen2.5-32B-Instruct"),
    "simplescaling/s1.1-32B": (QWEN25_32B, "shipped shape of its base, Qwen/Qwen2.5-32B-Instruct"),
    "Qwen/Qwen2.5-7B-Instruct": (QWEN25_7B, "shipped config.json of Qwen/Qwen2.5-7B-Instruct"),
    "Qwen/Qwen2.5-7B": (QWEN25_7B, "shipped config.json of Qwen/Qwen2.5-7B"),
    "Qwen/Qwen2.5-0.5B-Instruct": (QWEN25_05B, "shipped config.json of Qwen/Qwen2.5-0.5B-Instruct"),
    "Qwen/Qwen2.5-0.5B": (QWEN25_05B, "shipped config.json of Qwen/Qwen2.5-0.5B"),
}
