"""Translate human-readable dates to ISO 8601 with a GRU encoder-decoder and Bahdanau attention.

"Wednesday, March 3, 2021", "03/03/21", "3rd of March 2021" ... -> "2021-03-03", character by
character. The decoder's additive attention learns an alignment: to write the month it looks
at the month name or digits, to write the day at the day (plots/attention_rnn_alignment_*.png).
Test dates never occur in training, and accuracy is measured on greedy decoding from the input
alone.

    attn run experiments/dates.py --workdir workdirs/dates          # the README's main job
    attn run experiments/dates.py:smoke --workdir /tmp/dates        # seconds, for tests

Expected: >= 99% exact match (sequence_accuracy) on held-out dates; a few minutes on 2 CPU
cores (measured numbers in BUILD_NOTES.md).
"""

from attn.train.config import base_config, shorten_for_smoke
from attn.train.sweep import loguniform, random, uniform

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(model="rnn_seq2seq")
    config.data.update(name="dates", batch_size=64, num_train=20_000, num_test=1_000)
    config.model.update(cell="gru", embed_features=32, hidden_features=128)
    config.model.attention.score = "additive"
    config.optim.update(
        learning_rate=3e-3,
        schedule="warmup_cosine_decay_schedule",
        schedule_kwargs={"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 100},
    )
    config.train.update(num_steps=3000, eval_every=1000, checkpoint_every=500, log_every=100)
    if arg == "smoke":
        config.data.update(batch_size=8, num_train=64, num_validation=16, num_test=16)
        config.model.update(embed_features=8, hidden_features=16)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Eight reproducible draws of learning rate and embedding/readout dropout, each trial one
    vmapped program's member: ``attn sweep experiments/dates.py[:smoke] --workdir W``."""
    return random(
        4 if arg == "smoke" else 8,
        seed=0,
        **{"optim.learning_rate": loguniform(1e-3, 1e-2), "model.dropout_rate": uniform(0.0, 0.3)},
    )
