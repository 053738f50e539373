"""A Vision Transformer on scikit-learn's handwritten digits (1,797 real 8x8 images, shipped
with scikit-learn; fixed stratified 75/25 split: 1,347 train, 450 test).

2x2 patches (16 patches and a class token), 2-D sinusoidal positions, a 2-layer d=64 encoder,
random shifts of up to one pixel. Anchors on the same split (REFERENCES.md): RBF SVM 98.7%
(the ceiling to quote), logistic regression 96.9%, a plain 2-layer d=64 ViT 96.7% after 3000
steps.

    attn run experiments/vit_digits.py --workdir workdirs/vit_digits
    attn plot --workdir workdirs/vit_digits       # CLS attention per head and its rollout
    attn run experiments/vit_digits.py:smoke --workdir /tmp/vit_digits

Expected: >= 97% test accuracy in under 5 minutes on 2 CPU cores (measured numbers in
BUILD_NOTES.md).
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="vit")
    config.data.update(name="digits", batch_size=64, max_shift=1)
    config.model.update(
        patch_size=2,
        pool="cls",
        num_layers=2,
        num_heads=4,
        features=64,
        mlp_features=128,
        dropout_rate=0.1,
    )
    config.optim.update(
        learning_rate=2e-3,
        kwargs={"weight_decay": 0.05},
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 200},
    )
    config.train.update(
        num_steps=6000,
        eval_every=1000,
        checkpoint_every=1000,
        log_every=100,
        best_metric="accuracy",
    )
    if arg == "smoke":
        config.data.update(batch_size=16)
        config.model.update(num_layers=1, features=32, mlp_features=64)
        config.train.update(eval_batches=2)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Learning rate x dropout x seed (the smoke grid: 2 learning rates x 2 seeds)."""
    if arg == "smoke":
        return grid(**{"optim.learning_rate": [1e-3, 2e-3], "train.seed": [0, 1]})
    return grid(
        **{
            "optim.learning_rate": [1e-3, 2e-3, 4e-3],
            "model.dropout_rate": [0.0, 0.1],
            "train.seed": [0, 1, 2],
        }
    )
