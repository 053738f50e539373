"""A Vision Transformer trained from scratch on CIFAR-10 (TFDS catalog: needs a network
connection once to prepare the data; no TensorFlow needed).

4x4 patches (64 patches and a class token), 2-D sinusoidal positions, a 6-layer d=192
encoder (ViT-Tiny's width), random 4-pixel crops and flips, AdamW with a warm-up and cosine
decay. Published anchors: a ViT from scratch reaches ~80% without and ~91% with heavy
augmentation (REFERENCES.md); expect the lower end with this plain recipe.

    attn run experiments/vit_cifar10.py --workdir workdirs/vit_cifar10     # an accelerator
    attn plot --workdir workdirs/vit_cifar10
    attn run experiments/vit_cifar10.py:smoke --workdir /tmp/vit_cifar10  # tests: mock data

Expected: not measured here (no network, and hours on 2 CPU cores).
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="vit")
    config.data.update(name="cifar10", batch_size=256, max_shift=4)
    config.model.update(
        patch_size=4,
        pool="cls",
        num_layers=6,
        num_heads=3,
        features=192,
        mlp_features=768,
        dropout_rate=0.1,
    )
    config.optim.update(
        learning_rate=1e-3,
        kwargs={"weight_decay": 0.05},
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 2000},
    )
    config.train.update(
        num_steps=40_000,
        eval_every=2000,
        checkpoint_every=2000,
        log_every=200,
        best_metric="accuracy",
    )
    if arg == "smoke":
        config.data.update(batch_size=4)
        config.model.update(num_layers=1, num_heads=2, features=16, mlp_features=32, patch_size=8)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Learning rate x weight decay."""
    return grid(**{"optim.learning_rate": [5e-4, 1e-3], "optim.kwargs.weight_decay": [0.05, 0.1]})
