"""Optional experiment tracking from rank 0: Weights & Biases and MLflow (only when configured).

MLflow's offline store is a ``file:`` tracking URI (a directory of runs). MLflow 3 keeps that
store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is set; a config
that names a ``file:`` URI has asked for it, so the sink sets that variable (unless it is set).
"""

from __future__ import annotations

import os
from typing import Any

from s1ray.train.config import TrainConfig


class MetricsSink:
    """Optional W&B / MLflow logging from rank 0 (only when configured)."""

    def __init__(self, cfg: TrainConfig):
        self.wandb = self.mlflow = None
        lc = cfg.logging
        if lc.wandb is not None:
            import wandb

            self.wandb = wandb.init(
                project=lc.wandb.project, entity=lc.wandb.entity, name=lc.wandb.run_name or cfg.name,
                id=(lc.wandb.run_name or cfg.name).replace("/", "-"), resume="allow", tags=lc.wandb.tags,
                config=cfg.model_dump(mode="json"),
            )
        if lc.mlflow is not None:
            import mlflow

            uri = lc.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
            if uri and uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            if lc.mlflow.tracking_uri:
                mlflow.set_tracking_uri(lc.mlflow.tracking_uri)
            mlflow.set_experiment(lc.mlflow.experiment)
            self.mlflow = mlflow
            mlflow.start_run(run_name=cfg.name)
            mlflow.log_params({k: str(v)[:250] for k, v in cfg.model_dump(mode="json").items()})

    def log(self, metrics: dict[str, Any]) -> None:
        nums = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        if self.wandb is not None:
            self.wandb.log(nums, step=int(metrics["step"]))
        if self.mlflow is not None:
            self.mlflow.log_metrics({k: float(v) for k, v in nums.items()}, step=int(metrics["step"]))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()
