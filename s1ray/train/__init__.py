"""SFT of s1-style reasoning models on Ray Train + DeepSpeed.

config (TrainConfig) -> data (render, mask, pack; pure) -> trainer (driver: TorchTrainer.fit)
-> loop (per-worker: DeepSpeed ZeRO, checkpoints, resume) -> export (HF safetensors for vLLM).
Entry point: ``python jobs/train_sft.py --config configs/train/<x>.yaml``.
"""
