"""Training: configs, the optax loop, orbax checkpoints, metrics, logs and plots."""

from attn.train.config import base_config, load_config
from attn.train.interrupt import TrainingInterrupted
from attn.train.loop import Experiment, NonFiniteLossError, train_and_evaluate

__all__ = [
    "Experiment",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "base_config",
    "load_config",
    "train_and_evaluate",
]
