"""Keyword spotting on Speech Commands (TFDS catalog, the 12-class V2 setup: ten words,
"silence" and "unknown"; needs a network connection once to prepare the data, and TensorFlow
for tfds's preparation of it) with a Transformer encoder over the log-mel frames.

Two stride-2 convolutions (time shrunk x4), a 4-layer d=128 attn.nn encoder whose outputs are
averaged over the clip's real steps, SpecAugment on the training features, AdamW with a
warm-up and cosine decay. Published anchor: the Keyword Transformer (Berg et al. 2021)
reaches 98.6% on V2-12 (REFERENCES.md), with far more compute than this recipe.

    attn run experiments/speech_commands.py --workdir workdirs/speech_commands   # accelerator
    attn plot --workdir workdirs/speech_commands     # each head's attention over the clip
    attn run experiments/speech_commands.py:smoke --workdir /tmp/kws   # tests: mock data

Expected: not measured here (no network).
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="keyword_transformer")
    config.data.update(name="speech_commands", batch_size=256)
    config.model.update(
        num_layers=4,
        num_heads=4,
        features=128,
        mlp_features=512,
        conv_channels=32,
        dropout_rate=0.1,
    )
    config.optim.update(
        learning_rate=1e-3,
        kwargs={"weight_decay": 0.05},
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 1000},
    )
    config.train.update(
        num_steps=30_000,
        eval_every=2000,
        checkpoint_every=2000,
        log_every=200,
        best_metric="accuracy",
    )
    if arg == "smoke":
        config.data.update(batch_size=2)
        config.model.update(num_layers=1, num_heads=2, features=16, mlp_features=32)
        config.model.update(conv_channels=4)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Learning rate x weight decay."""
    return grid(**{"optim.learning_rate": [5e-4, 1e-3], "optim.kwargs.weight_decay": [0.05, 0.1]})
