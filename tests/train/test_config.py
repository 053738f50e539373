"""Configs: every bad config or command line fails before anything is built, with a message
naming the key; model options have one definition; schedules follow the run length."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from attn import cli, models
from attn.train.config import apply_override, base_config, load_config, validate

from .helpers import SUPERVISED_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[2]
REVERSE = str(ROOT / "experiments" / "reverse.py")
MQAR = str(ROOT / "experiments" / "mqar.py")
DATES = str(ROOT / "experiments" / "dates.py")


def smoke(path: str = REVERSE, **overrides) -> ml_collections.ConfigDict:
    config = load_config(f"{path}:smoke")
    for key, value in overrides.items():
        apply_override(config, key, str(value))
    return config


# (experiment, overrides, what the error must say). Each fails in validate(): before any data
# is generated or anything is compiled.
BAD_CONFIGS = [
    # train
    (REVERSE, {"train.best_metric": "acuracy"}, r"train.best_metric: 'acuracy' .*'accuracy'"),
    (REVERSE, {"train.best_mode": "maximum"}, r"train.best_mode: 'maximum' is not valid"),
    (REVERSE, {"train.num_steps": 0}, r"train.num_steps: must be >= 1, got 0"),
    (REVERSE, {"train.num_steps": -5}, r"train.num_steps: must be >= 1, got -5"),
    (REVERSE, {"train.accumulation_steps": 0}, r"train.accumulation_steps: must be >= 1"),
    (REVERSE, {"train.accumulation_steps": 3}, r"data.batch_size=8 must be a multiple of train"),
    (REVERSE, {"train.eval_batches": 0}, r"train.eval_batches: must be >= 1"),
    (REVERSE, {"train.max_to_keep": 0}, r"train.max_to_keep: must be >= 1"),
    (REVERSE, {"train.log_every": -1}, r"train.log_every: must be >= 0"),
    (REVERSE, {"train.sample_tokens": 5}, r"train.sample_tokens=5: model 'encoder_classifier'"),
    (
        REVERSE,
        {"train.seed": 1.5},
        r"--config.train.seed=1.5: train.seed: Could not override field 'seed'",
    ),
    # optim
    (REVERSE, {"optim.learning_rate": -1e-3}, r"optim.learning_rate: must be > 0.0, got -0.001"),
    (REVERSE, {"optim.learning_rate": 0}, r"optim.learning_rate: must be > 0.0, got 0"),
    (REVERSE, {"optim.grad_clip_norm": -1.0}, r"optim.grad_clip_norm: must be >= 0.0"),
    (REVERSE, {"optim.name": "adamm"}, r"optim.name: 'adamm' is not an optax optimizer"),
    (REVERSE, {"optim.schedule": "cosine"}, r"optim.schedule: 'cosine' is not an optax schedule"),
    (REVERSE, {"optim.kwargs": {"weight_decya": 0.1}}, r"optim.kwargs: .*weight_decya"),
    (REVERSE, {"optim.kwargs": {"b1": "x"}}, r"optim: the optimizer fails"),
    (
        REVERSE,
        {"optim.schedule_kwargs.warmup_steps": 100},
        r"optim.schedule_kwargs.warmup_steps=100 must be less than the schedule's decay_steps=6",
    ),
    # model.attention: catalog specs bind their arguments
    (
        REVERSE,
        {"model.attention.weighting": "softmax(tempurature=2.0)"},
        r"model.attention.weighting: .*tempurature.*temperature",
    ),
    (
        REVERSE,
        {"model.attention.weighting": "softmax(2.0)"},
        r"model.attention.weighting: .*keyword",
    ),
    (REVERSE, {"model.attention.weighting": "softmaxx"}, r"valid weighting names"),
    (REVERSE, {"model.attention.mask": "causal(bogus=1)"}, r"model.attention.mask: .*bogus"),
    (REVERSE, {"model.attention.mask": "causel()"}, r"model.attention.mask: .*valid mask names"),
    (REVERSE, {"model.attention.score": "dott"}, r"model.attention.score: .*valid score names"),
    (
        REVERSE,
        {"model.attention.variant": "performer(num_features=0)"},
        r"model.attention.variant: .*num_features",
    ),
    (REVERSE, {"model.attention.variant": "performr"}, r"valid attention names"),
    (
        REVERSE,
        {"model.attention.variant": "linear(feature_map='tanh')"},
        r"feature_map must be one of",
    ),
    (
        REVERSE,
        {"model.attention.variant": "linear", "model.attention.score": "cosine"},
        r"model \(encoder_classifier\): .*replaces score",
    ),
    (
        REVERSE,
        {"model.attention.implementation": "chunky"},
        r"model.attention.implementation: 'chunky' .*chunked",
    ),
    (
        REVERSE,
        {"model.attention.implementation": "chunked", "model.attention.weighting": "sparsemax"},
        r"implementation='chunked' cannot apply weighting sparsemax",
    ),
    (REVERSE, {"model.attention.positional": "alibo"}, r"positional: 'alibo' .*'alibi'"),
    (REVERSE, {"model.attention.dropout_rate": 1.5}, r"dropout_rate: must be in \[0.0, 1.0\)"),
    (
        REVERSE,
        {"model.attention.qk_norm": "yes"},
        r"qk_norm=yes: model.attention.qk_norm: Could not",
    ),
    # model
    (REVERSE, {"model.name": "transformr"}, r"model.name: unknown model 'transformr'"),
    (REVERSE, {"model.name": "decoder_lm"}, r"model.pool: unknown key"),
    (REVERSE, {"model.num_heads": 3}, r"num_heads=3"),
    (REVERSE, {"model.num_kv_heads": 3}, r"num_kv_heads=3"),
    (REVERSE, {"model.num_layers": 0}, r"model.num_layers: must be >= 1"),
    (REVERSE, {"model.pool": "max"}, r"model.pool: 'max' is not valid"),
    (REVERSE, {"model.pool": "mean"}, r"model.pool='mean' does not fit task kind 'tag'"),
    (REVERSE, {"model.norm": "batch_norm"}, r"model.norm: 'batch_norm' is not valid"),
    (REVERSE, {"model.activation": "swish"}, r"model.activation: 'swish' .*silu"),
    (REVERSE, {"model.dtype": "float16"}, r"model.dtype: 'float16' is not valid"),
    (REVERSE, {"model.features": 0}, r"model.features: must be >= 1"),
    (DATES, {"model.hidden_features": 7}, r"hidden_features must be even"),
    (DATES, {"model.attention.score": "cosine"}, r"model.attention.score: 'cosine' is not"),
    (MQAR, {"model.attention.positional": "learnd"}, r"'learnd' .*'learned'"),
    # data
    (REVERSE, {"data.name": "reverso"}, r"data.name: unknown dataset 'reverso'"),
    (REVERSE, {"data.name": "dates"}, r"data.length: unknown key for dataset 'dates'"),
    (MQAR, {"model.name": "encoder_decoder"}, r"'encoder_decoder' does not handle dataset 'mqar'"),
    (REVERSE, {"data.lenght": 5}, r"data has no 'lenght'; did you mean 'data.length'"),
    (REVERSE, {"data.batch_size": 0}, r"data.batch_size must be a positive int"),
    (
        REVERSE,
        {"data.length": "long"},
        r"--config.data.length=long: data.length: Could not override",
    ),
    (REVERSE, {"data.length": 0}, r"data.length must be a positive int"),
    (REVERSE, {"data.num_train": 0}, r"data.num_train must be a positive int"),
    (REVERSE, {"data.num_symbols": 300}, r"num_symbols must be in \[1, 253\], got 300"),
]


def _override_text(value) -> str:
    return value if isinstance(value, str) else repr(value)


@pytest.mark.parametrize(
    ("path", "overrides", "message"),
    BAD_CONFIGS,
    ids=[",".join(f"{k}={v}" for k, v in o.items()) for _, o, _ in BAD_CONFIGS],
)
def test_bad_config_fails_in_validate_naming_the_key(path, overrides, message):
    config = load_config(f"{path}:smoke")
    with pytest.raises(ValueError, match=message):
        for key, value in overrides.items():
            apply_override(config, key, _override_text(value))
        validate(config)


def test_the_table_has_forty_cases():
    assert len(BAD_CONFIGS) >= 40


def write_experiment(tmp_path: Path, body: str) -> str:
    path = tmp_path / "experiment.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "missing.py", "--workdir", "w"], "config file 'missing.py' does not exist"),
        (["run", f"{REVERSE}:bogusarg", "--workdir", "w"], "has no variant 'bogusarg'.*'smoke'"),
        (
            ["run", f"{REVERSE}:smoke", "--workdir", "w", "--config.optim.lerning_rate=1"],
            "did you mean 'optim.learning_rate'",
        ),
        (
            ["run", f"{REVERSE}:smoke", "--workdir", "w", "--config.modle.name=x"],
            "did you mean 'model'",
        ),
        (
            ["run", f"{REVERSE}:smoke", "--workdir", "w", "--config.train.num_steps='many'"],
            "num_steps",
        ),
        (
            ["run", f"{REVERSE}:smoke", "--workdir", "w", "--config.model.attention.mask=x(b=1)"],
            "model.attention.mask",
        ),
        (
            ["run", f"{REVERSE}:smoke", "--workdir", "w", "--config.train.num_steps=0"],
            "train.num_steps: must be >= 1",
        ),
    ],
)
def test_bad_command_lines_fail_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert re.search(message, error), error
    assert not (tmp_path / "w").exists()  # nothing was started


def test_get_config_must_return_a_config_dict(tmp_path):
    path = write_experiment(
        tmp_path,
        """
        def get_config(arg=None):
            return {"data": {}, "model": {}, "optim": {}, "train": {}}
        """,
    )
    with pytest.raises(ValueError, match=r"get_config must return an ml_collections\.ConfigDict"):
        load_config(path)
    path = write_experiment(tmp_path, "x = 1\n")
    with pytest.raises(ValueError, match=r"has no get_config\(arg=None\) function"):
        load_config(path)


def test_an_experiment_without_args_takes_none(tmp_path):
    path = write_experiment(
        tmp_path,
        """
        from attn.train.config import base_config

        def get_config(arg=None):
            return base_config(model="encoder_classifier")
        """,
    )
    assert load_config(path)
    with pytest.raises(ValueError, match="its ARGS are none"):
        load_config(f"{path}:smoke")


# ------------------------------------------------------------------ one definition of the options


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.attention.implementation", "chunked"),
        ("model.attention.qk_norm", "True"),
        ("model.norm", "rms_norm"),
        ("model.attention.positional", "alibi"),
        ("model.attention.mask", "sliding_window(left=4, right=4)"),
    ],
)
def test_model_options_are_overridable_in_every_transformer_experiment(key, value):
    """They failed with "unknown config key" before: the model keys were defined twice."""
    for path in (REVERSE, MQAR, str(ROOT / "experiments" / "listops.py")):
        config = smoke(path, **{key: value})
        checked = validate(config)
        section, _, name = key.removeprefix("model.").rpartition(".")
        options = getattr(checked.model, section) if section else checked.model
        assert str(getattr(options, name)) == value


def test_model_section_is_the_models_options_dataclass():
    """Every experiment's model section holds exactly its model's fields, defaults included:
    the same definition fills the config, checks it and reaches the module."""
    for path in SUPERVISED_EXPERIMENTS:
        config = load_config(f"{path}:smoke")
        validate(config)
        section = config.model.to_dict()
        rebuilt = models.default_config(section.pop("name"), **section)
        assert rebuilt.to_dict() == config.model.to_dict(), path
    defaults = base_config(model="decoder_lm").model
    assert defaults.mlp_features is None  # derived: 4 * features, in one place
    assert defaults.attention.positional == "sinusoidal"


def test_chunked_implementation_from_the_config_reaches_attend():
    """model.attention.implementation arrives at every MultiHeadAttention unrenamed."""
    config = smoke(MQAR, **{"model.attention.implementation": "chunked"})
    checked = validate(config)
    task = models.TaskInfo("lm", 16, 16, 32, 32)
    model = models.build_model(checked.model, task, rngs=nnx.Rngs(0))
    layers = model.decoder.layers
    assert {layer.self_attention.implementation for layer in layers} == {"chunked"}
    assert {layer.self_attention.positional for layer in layers} == {"rope"}


# ------------------------------------------------------------------ schedules follow num_steps


def test_schedule_follows_num_steps_unless_set():
    """Overriding train.num_steps used to leave decay_steps at the old value (the learning rate
    was 0 from step 6 in the smoke variant)."""
    config = smoke(**{"train.num_steps": 40})
    learning_rate = validate(config).learning_rate
    peak = config.optim.learning_rate
    assert learning_rate(20) > 0.4 * peak  # mid-run: half way down the cosine
    assert learning_rate(39) < 0.01 * peak  # and at the end, near 0
    config = smoke(**{"train.num_steps": 40, "optim.schedule_kwargs.decay_steps": 10})
    assert validate(config).learning_rate(20) == pytest.approx(0.0)  # explicit: kept


def test_validate_returns_what_the_run_builds_from():
    checked = validate(smoke())
    assert checked.model.name == "encoder_classifier"
    assert checked.dataset.kind == "tag"
    assert checked.train.num_steps == 6
    assert float(checked.learning_rate(0)) == 0.0  # warm-up starts at init_value 0
    state = checked.optimizer.init({"w": jnp.ones(3)})
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state))


def test_true_and_false_spelled_in_lower_case_are_booleans():
    config = load_config(f"{REVERSE}:smoke")
    apply_override(config, "model.attention.qk_norm", "true")
    assert config.model.attention.qk_norm is True
    apply_override(config, "model.attention.qk_norm", "false")
    assert config.model.attention.qk_norm is False
