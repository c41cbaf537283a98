"""Export the trained model as a plain HF model dir: safetensors + config + tokenizer + chat template.

ZeRO-3 partitions every parameter across ranks, so the weights are first consolidated:
``engine._zero3_consolidated_16bit_state_dict()`` gathers one module at a time
(``GatheredParameters``) into a CPU state dict on rank 0 -- the same routine DeepSpeed's
``save_16bit_model`` and HF accelerate use -- which must be called on *every* rank. ZeRO-2
keeps whole 16-bit weights on each rank, so rank 0 takes ``module.state_dict()``.

Rank 0 then writes sharded safetensors (``huggingface_hub.save_torch_state_dict``, 5 GB
shards + index), the model config and generation config, and the tokenizer with its chat
template, into a local temp dir, and copies it to ``export_dir`` (a local/NFS path or a pyarrow
URI such as s3://). ``s1ray_export.json`` (written last) records the step and final loss; a
re-run of a finished run finds it and does not export again. The result loads in vLLM and in
``transformers.AutoModelForCausalLM``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("s1ray.train")  # a worker's print() would show twice (see loop.py)

EXPORT_MARKER = "s1ray_export.json"


def consolidated_state_dict(engine, zero_stage: int) -> dict | None:
    """Full 16-bit state dict on rank 0 (CPU tensors), None elsewhere. Collective for ZeRO-3."""
    import torch.distributed as dist

    if zero_stage == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    if dist.get_rank() != 0:
        return None
    # clone: ZeRO-1/2 keep the 16-bit weights as views of flat buffers, which safetensors refuses
    return {k: v.detach().to("cpu", copy=True) for k, v in engine.module.state_dict().items()}


def write_hf_model(
    state_dict: dict, hf_config, out_dir: str | Path, tokenizer_src: str, generation_src: str | None, info: dict
) -> Path:
    """Write an HF model dir from a full state dict (local ``out_dir``)."""
    import torch
    from huggingface_hub import save_torch_state_dict
    from transformers import AutoTokenizer, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = dict(state_dict)
    if getattr(hf_config, "tie_word_embeddings", False):
        emb = next((k for k in sd if k.endswith("embed_tokens.weight")), None)
        if emb is not None and "lm_head.weight" in sd and torch.equal(sd["lm_head.weight"], sd[emb]):
            del sd["lm_head.weight"]  # tied: loaders re-tie it to the embedding
    sd = {k: v.contiguous() for k, v in sd.items()}
    save_torch_state_dict(sd, str(out), max_shard_size="5GB", safe_serialization=True)
    dtype = next(iter(sd.values())).dtype
    hf_config.dtype = str(dtype).removeprefix("torch.")
    hf_config.use_cache = True
    hf_config.save_pretrained(out)
    if generation_src:
        try:
            GenerationConfig.from_pretrained(generation_src).save_pretrained(out)
        except OSError:
            pass  # the source model has no generation_config.json
    tok = AutoTokenizer.from_pretrained(tokenizer_src)
    tok.save_pretrained(out)  # includes the chat template
    if not (out / "chat_template.jinja").exists() and tok.chat_template:
        (out / "chat_template.jinja").write_text(tok.chat_template)
    (out / EXPORT_MARKER).write_text(json.dumps(info, indent=1))
    return out


def export_done(export_dir: str, step: int) -> bool:
    """Whether ``export_dir`` already holds a complete export of ``step``."""
    from pyarrow.fs import FileType

    try:
        fs, path = _fs(export_dir)
        marker = path.rstrip("/") + "/" + EXPORT_MARKER
        if fs.get_file_info(marker).type != FileType.File:
            return False
        with fs.open_input_stream(marker) as f:
            return json.loads(f.read().decode()).get("step") == step
    except Exception:
        return False


def _fs(uri: str):
    from pyarrow.fs import FileSystem, LocalFileSystem

    if "://" in uri:
        return FileSystem.from_uri(uri)
    return LocalFileSystem(), str(Path(uri).resolve())


def publish(local_dir: Path, export_dir: str) -> str:
    """Copy a finished local export to ``export_dir`` (marker last), replacing what was there."""
    from pyarrow.fs import LocalFileSystem, copy_files

    fs, path = _fs(export_dir)
    if isinstance(fs, LocalFileSystem):
        dest = Path(path)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.with_name(dest.name + ".partial")
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(local_dir, staging, ignore=shutil.ignore_patterns(EXPORT_MARKER))
        shutil.copy2(local_dir / EXPORT_MARKER, staging / EXPORT_MARKER)
        staging.rename(dest)
        return str(dest)
    fs.create_dir(path, recursive=True)
    for p in sorted(local_dir.iterdir()):
        if p.name != EXPORT_MARKER:
            copy_files(str(p), f"{path}/{p.name}", destination_filesystem=fs, source_filesystem=LocalFileSystem())
    copy_files(
        str(local_dir / EXPORT_MARKER), f"{path}/{EXPORT_MARKER}", destination_filesystem=fs,
        source_filesystem=LocalFileSystem(),
    )
    return export_dir


def export_from_engine(engine, cfg, hf_config, info: dict[str, Any]) -> str | None:
    """Consolidate (all ranks) and write + publish (rank 0). Returns the export dir on rank 0."""
    import torch.distributed as dist

    sd = consolidated_state_dict(engine, cfg.zero_stage)
    dest = None
    if dist.get_rank() == 0:
        with tempfile.TemporaryDirectory(prefix="s1ray-export-") as tmp:
            local = write_hf_model(sd, hf_config, Path(tmp) / "model", cfg.tokenizer or cfg.model, cfg.model, info)
            dest = publish(local, cfg.resolved_export_dir())
        log.info("exported HF model to %s", dest)
    del sd
    dist.barrier()
    return dest
