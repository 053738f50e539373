"""Reverse a sequence of 16 symbols (10-symbol alphabet) with a 1-layer Transformer encoder.

Each output position must attend to its mirror position, so the attention map is an
anti-diagonal. Reference: a 1-layer, 1-head, d=32 Transformer reaches 100% test accuracy (UvA
deep learning JAX tutorial 6).

    attn run experiments/reverse.py --workdir workdirs/reverse        # full run
    attn run experiments/reverse.py:smoke --workdir /tmp/reverse      # seconds, for tests

Expected: 100% sequence accuracy on the test split.
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="encoder_classifier")
    config.data.update(name="reverse", length=16, num_symbols=10, batch_size=64)
    config.model.update(pool="none", num_layers=1, num_heads=1, features=32, mlp_features=64)
    config.model.attention.positional = "sinusoidal"
    config.optim.update(
        learning_rate=3e-3,
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 100},
    )
    config.train.update(num_steps=1500, eval_every=500, checkpoint_every=500, log_every=100)
    if arg == "smoke":
        config.data.update(batch_size=8, num_train=64, num_test=16)
        shorten_for_smoke(config, num_steps=6)
    return config


def sweep(arg: str | None = None):
    """Learning rate x seed: ``attn sweep experiments/reverse.py[:smoke] --workdir W`` (the
    smoke grid is 2 x 2, vmapped as one program of 4 trials)."""
    rates = [1e-3, 3e-3] if arg == "smoke" else [1e-3, 3e-3, 1e-2]
    seeds = [0, 1] if arg == "smoke" else [0, 1, 2]
    return grid(**{"optim.learning_rate": rates, "train.seed": seeds})
