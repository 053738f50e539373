"""Character-level language model on TFDS tiny_shakespeare (nanoGPT's shakespeare_char recipe).

4 layers, 4 heads, d=128, context 64, batch 12, 2000 steps: nanoGPT's small CPU recipe reaches
a validation loss of about 1.88. Samples text at every evaluation (metrics.jsonl "sample").
Needs the machine to download tiny_shakespeare once through tensorflow-datasets; the smoke
variant runs on mock data in the tests.

    attn run experiments/shakespeare_char.py --workdir workdirs/shakespeare
    attn run experiments/shakespeare_char.py:smoke --workdir /tmp/shakespeare

Expected: eval loss about 1.9 after 2000 steps (not measured here: no download on this machine).
"""

from attn.train.config import base_config, shorten_for_smoke

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="decoder_lm")
    config.data.update(name="tiny_shakespeare", batch_size=12, seq_len=64)
    config.model.update(num_layers=4, num_heads=4, features=128, mlp_features=512)
    config.model.attention.positional = "learned"
    config.optim.update(
        learning_rate=1e-3,
        kwargs={"b2": 0.99, "weight_decay": 0.1},
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={
            "init_value": 0.0,
            "peak_value": 1.0,
            "warmup_steps": 100,
            "end_value": 0.1,
        },
    )
    config.train.update(
        num_steps=2000,
        eval_every=500,
        checkpoint_every=500,
        log_every=100,
        eval_batches=50,
        best_metric="loss",
        best_mode="min",
        sample_tokens=200,
        sample_prompt="ROMEO:",
    )
    if arg == "smoke":
        config.data.update(batch_size=4, seq_len=16)
        config.model.update(num_layers=1, features=32, mlp_features=64)
        shorten_for_smoke(config)
        config.train.update(eval_batches=2, sample_tokens=8)
    return config
