"""Per-GPU memory of one vLLM replica and the KV-cache capacity left: how many sequences of
``max_model_len`` tokens fit at once. Pure arithmetic on a :class:`ModelShape`.

vLLM gives the KV cache what is left of ``gpu_memory_utilization x device memory`` after the
weights (split over tensor parallelism), the peak activations of its profiling forward pass
(``max_num_batched_tokens`` tokens; the sampler's fp32 logits for ``max_num_seqs`` rows) and
CUDA graphs. K and V heads are split over tensor parallelism, and replicated where there are
fewer KV heads than GPUs. vLLM refuses to start when one ``max_model_len`` sequence does not fit.
On vLLM's CPU build the KV cache is a fixed ``VLLM_CPU_KVCACHE_SPACE`` (``cpu_kv_cache_gib``).
"""

from __future__ import annotations

from s1ray.plan.shapes import ModelShape
from s1ray.plan.terms import GIB, Term

SRC = "arithmetic: vLLM's memory profile (s1ray.plan.engine_memory)"
# vLLM's own defaults where a config leaves them unset (H100-class GPU; see README's engine section)
DEFAULT_BATCHED_TOKENS = {"server": 8192, "offline": 16384}
DEFAULT_MAX_SEQS = 1024
CUDA_GRAPHS_BYTES = GIB // 2  # assumed: vLLM's captured graphs plus the non-torch allocations
CUDA_GRAPHS_SRC = "assumed: vLLM's CUDA graphs and non-torch memory (not measured here)"


def kv_bytes_per_token_per_gpu(shape: ModelShape, tp: int, dtype_bytes: int = 2) -> int:
    heads_per_gpu = max(1, -(-shape.num_key_value_heads // tp))
    return 2 * shape.num_hidden_layers * heads_per_gpu * shape.head_dim * dtype_bytes


def engine_terms(
    shape: ModelShape, tp: int, max_num_batched_tokens: int, max_num_seqs: int, enforce_eager: bool, dtype_bytes: int = 2
) -> list[Term]:
    """Weights, profiling activations and CUDA graphs on one GPU of a replica (everything but KV)."""
    h, i = shape.hidden_size, shape.intermediate_size
    act = max_num_batched_tokens * dtype_bytes * (4 * h + (2 * i + shape.q_dim + 2 * shape.kv_dim) // tp)
    sampler = max_num_seqs * shape.vocab_size * 4
    terms = [
        Term(f"weights (1/{tp} of {shape.total_params / 1e9:.2f}B params)", shape.total_params * dtype_bytes // tp, SRC),
        Term(f"profiling activations ({max_num_batched_tokens} tokens) + sampler logits ({max_num_seqs} rows)",
             act + sampler, SRC),
    ]
    if not enforce_eager:
        terms.append(Term("CUDA graphs + non-torch", CUDA_GRAPHS_BYTES, CUDA_GRAPHS_SRC))
    return terms


def kv_capacity(
    shape: ModelShape, tp: int, device_bytes: int, gpu_memory_utilization: float, used: list[Term], dtype_bytes: int = 2
) -> tuple[int, int]:
    """(KV bytes per GPU, tokens that fit) after ``used`` within the utilization budget."""
    kv_bytes = int(device_bytes * gpu_memory_utilization) - sum(t.bytes for t in used)
    return kv_bytes, max(0, kv_bytes) // kv_bytes_per_token_per_gpu(shape, tp, dtype_bytes)


def cpu_kv_tokens(shape: ModelShape, kv_gib: float, dtype_bytes: int = 2) -> int:
    return int(kv_gib * GIB) // kv_bytes_per_token_per_gpu(shape, 1, dtype_bytes)
