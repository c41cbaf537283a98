"""``s1ray plan``: per-GPU memory, Ray resources and expected time of a job, before renting GPUs.

shapes (config.json -> ModelShape) -> train_memory / engine_memory (pure arithmetic per GPU)
-> devices + anchors (GPU sizes, time anchors with their sources) -> stages (one StagePlan per
job in a config) -> report (text, verdict) -> cli (``s1ray plan --config ...``).
Nothing here needs a GPU, weights or a Ray cluster.
"""
