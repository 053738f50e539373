"""Show, Attend and Tell on COCO captions (TFDS catalog, Karpathy splits; needs a network
connection once to prepare the 2014 images, about 38 GB; no TensorFlow needed).

Images are cut to their centre square and resized to 64x64, and captions are read as bytes
(no vocabulary file); the model is the paper's layout at a small size: a CNN grid (16x16
regions) and an LSTM that attends over it with additive attention at every character.
Xu et al. (2015) report BLEU-4 24.3 (soft attention) with VGG features and word captions;
this character-level model from scratch is not comparable to that figure.

    attn run experiments/captions_coco.py --workdir workdirs/captions_coco   # an accelerator
    attn plot --workdir workdirs/captions_coco
    attn run experiments/captions_coco.py:smoke --workdir /tmp/captions_coco  # mock data

Expected: not measured here (no network).
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="show_attend_tell")
    config.data.update(name="coco_captions", batch_size=64, image_size=64, caption_length=64)
    config.model.update(
        cell="lstm", embed_features=128, hidden_features=512, conv_channels=64, num_downsamples=2
    )
    config.optim.update(
        learning_rate=1e-3,
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 1000},
    )
    config.train.update(
        num_steps=100_000,
        eval_every=5000,
        eval_batches=40,
        checkpoint_every=2000,
        log_every=200,
        best_metric="bleu4",
    )
    if arg == "smoke":
        config.data.update(batch_size=4, image_size=16, caption_length=12)
        config.model.update(
            embed_features=8, hidden_features=16, conv_channels=4, num_downsamples=1
        )
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Learning rate x seed."""
    return grid(**{"optim.learning_rate": [5e-4, 1e-3], "train.seed": [0, 1]})
