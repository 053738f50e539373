"""ListOps (Long Range Arena's generator semantics, seeded) with a Transformer encoder classifier.

Nested MAX/MIN/MED/SUM_MOD expressions over digits; the label is the value (10 classes). LRA
uses 500-2000 tokens; this CPU-sized variant keeps the operators and nesting but uses up to
256 tokens. The LRA vanilla Transformer reaches 36.4% at full length; chance is 10%.

    attn run experiments/listops.py --workdir workdirs/listops
    attn run experiments/listops.py:smoke --workdir /tmp/listops

Expected: clearly above chance (measured numbers in BUILD_NOTES.md).
"""

from attn.train.config import base_config, shorten_for_smoke

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="encoder_classifier")
    config.data.update(
        name="listops",
        batch_size=32,
        num_train=20_000,
        num_test=1_000,
        max_depth=6,
        min_length=32,
        max_length=256,
    )
    config.model.update(
        pool="mean",
        num_layers=2,
        num_heads=4,
        features=64,
        mlp_features=128,
    )
    config.optim.update(
        learning_rate=1e-3,
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 200},
    )
    config.train.update(
        num_steps=3000, eval_every=1000, checkpoint_every=500, log_every=100, best_metric="accuracy"
    )
    if arg == "smoke":
        config.data.update(
            batch_size=8, num_train=64, num_validation=16, num_test=16, max_depth=3, max_length=64
        )
        shorten_for_smoke(config)
    return config
