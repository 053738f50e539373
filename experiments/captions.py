"""Image captioning with attention on shapes_captions (generated here): 1-3 coloured shapes
on a 48x48 canvas, captioned "a red circle left of a blue square above a green triangle".
Every test image shows a (colour, shape, cell) combination never seen in training.

The default is a Transformer captioner (6x6 patches, a 2-layer encoder, a 2-layer decoder
with cross-attention); ``:sat`` is Show, Attend and Tell (Xu et al. 2015): a CNN grid and an
LSTM decoder with additive attention. Both decode greedily for evaluation. Besides exact
match (``sequence_accuracy``) and BLEU-4, evaluation reports attention localisation: the
share of a word's attention on the object it names, for colour and shape words.

    attn run experiments/captions.py --workdir workdirs/captions
    attn run experiments/captions.py:sat --workdir workdirs/captions_sat
    attn plot --workdir workdirs/captions       # each word's attention over the image
    attn run experiments/captions.py:smoke --workdir /tmp/captions

Expected (Transformer): >= 95% exact match on the held-out combinations and localisation
>= 0.8 within 15 minutes on 2 CPU cores (measured numbers in BUILD_NOTES.md).
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke", "sat", "sat_smoke")


def get_config(arg: str | None = None):
    sat = arg in ("sat", "sat_smoke")
    config = base_config(model="show_attend_tell" if sat else "transformer_captioner")
    config.data.update(
        name="shapes_captions",
        batch_size=64,
        num_train=20_000,
        num_validation=500,
        num_test=1_000,
        image_size=48,
        max_objects=3,
    )
    if sat:
        config.model.update(
            cell="lstm", embed_features=64, hidden_features=128, conv_channels=8, num_downsamples=3
        )
    else:
        config.model.update(patch_size=6, num_layers=2, num_heads=4, features=64, mlp_features=128)
    config.optim.update(
        learning_rate=2e-3,
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 200},
    )
    config.train.update(
        # The CNN's gradients make a SAT step ~2x a Transformer step here: fewer of them.
        num_steps=3000 if sat else 4000,
        eval_every=1000,
        checkpoint_every=500,
        log_every=100,
        best_metric="sequence_accuracy",
    )
    if arg in ("smoke", "sat_smoke"):
        config.data.update(
            batch_size=8, num_train=64, num_validation=8, num_test=16, image_size=24, max_objects=2
        )
        if sat:
            config.model.update(
                embed_features=16, hidden_features=32, conv_channels=4, num_downsamples=2
            )
        else:
            config.model.update(num_layers=1, features=32, mlp_features=64, patch_size=4)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Learning rate x seed."""
    rates = [1e-3, 2e-3] if arg in ("smoke", "sat_smoke") else [1e-3, 2e-3, 4e-3]
    return grid(**{"optim.learning_rate": rates, "train.seed": [0, 1]})
