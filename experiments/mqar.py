"""Multi-query associative recall (Zoology, Arora et al. 2023) with a 2-layer Transformer.

A sequence lists key-value pairs, then asks for some keys again; at each query the model must
output that key's value. A 2-layer attention model solves it (an induction head: layer 1
copies each key next to its value, layer 2 looks the query up); a 1-layer model stays near
chance. Accuracy counts only the query positions.

    attn run experiments/mqar.py --workdir workdirs/mqar
    attn run experiments/mqar.py:smoke --workdir /tmp/mqar
    attn run experiments/mqar.py --workdir workdirs/mqar_1layer --config.model.num_layers=1

Expected: >= 99% query accuracy at sequence length 64 with 8 pairs (measured in BUILD_NOTES.md).
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="decoder_lm")
    config.data.update(
        name="mqar",
        batch_size=64,
        seq_len=64,
        num_kv_pairs=8,
        vocab_size=256,
        num_train=20_000,
        num_test=1_000,
    )
    config.model.update(num_layers=2, num_heads=2, features=64, mlp_features=128)
    config.model.attention.positional = "rope"
    config.optim.update(
        learning_rate=1e-3,
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 200},
    )
    config.train.update(
        num_steps=4000, eval_every=1000, checkpoint_every=500, log_every=100, best_metric="accuracy"
    )
    if arg == "smoke":
        config.data.update(batch_size=8, num_train=64, num_validation=16, num_test=16)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Learning rate x weight decay x seed: ``attn sweep experiments/mqar.py[:smoke] --workdir W``
    (the full grid is 12 trials: one program of 8 and one of 4)."""
    if arg == "smoke":
        return grid(**{"optim.learning_rate": [1e-3, 3e-3], "train.seed": [0, 1]})
    return grid(
        **{
            "optim.learning_rate": [3e-4, 1e-3, 3e-3],
            "optim.kwargs": [{"weight_decay": 0.0}, {"weight_decay": 0.1}],
            "train.seed": [0, 1],
        }
    )
