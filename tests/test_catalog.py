"""Catalog names, specs with arguments, mask expressions, import strings and errors."""

import functools
import subprocess
import sys

import numpy as np
import pytest

from attn import catalog, masks, scores, weighting


def test_plain_names_return_the_functions():
    assert catalog.get("score", "scaled_dot") is scores.scaled_dot
    assert catalog.get("weighting", "entmax15") is weighting.entmax15


def test_arguments_are_bound():
    cosine = catalog.get("score", "cosine(temperature=0.05)")
    assert isinstance(cosine, functools.partial)
    assert cosine.func is scores.cosine and cosine.keywords == {"temperature": 0.05}


def test_mask_expressions_build_masks():
    spec = "causal() & sliding_window(left=2) | global_tokens(1)"
    built = catalog.get("mask", spec)
    want = (masks.causal() & masks.sliding_window(2)) | masks.global_tokens(1)
    shape = (1, 1, 6, 6)
    np.testing.assert_array_equal(built.dense(shape), want.dense(shape))
    np.testing.assert_array_equal(
        catalog.get("mask", "~causal").dense(shape), ~masks.causal().dense(shape)
    )


def test_import_strings_and_callables_pass_through():
    assert catalog.get("weighting", "attn.weighting:sparsemax") is weighting.sparsemax
    own = lambda logits, mask=None: logits  # noqa: E731
    assert catalog.get("weighting", own) is own
    mask = masks.causal()
    assert catalog.get("mask", mask) is mask


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        (
            "score",
            "dott",
            "unknown score 'dott'; valid score names: additive, cosine, dot, general",
        ),
        ("weighting", "softmax(", "cannot parse"),
        ("mask", "causal(offset=x)", "must be literals"),
        ("mask", "causal().offset", "expected name"),
        (
            "optimizer",
            "adam",
            "unknown catalog kind 'optimizer'; valid kinds: score, weighting, mask",
        ),
        ("weighting", "attn.weighting:nothing_here", "cannot import"),
        ("weighting", "no_such_package.mod:fn", "cannot import"),
        ("mask", "sliding_window(left=-1)", "non-negative"),
        # Arguments are bound when a spec is resolved (config validation), not when traced.
        (
            "weighting",
            "softmax(tempurature=2.0)",
            "unknown argument 'tempurature'; softmax takes temperature",
        ),
        ("weighting", "softmax(2.0)", "arguments must be keyword arguments"),
        ("score", "cosine(0.1)", "arguments must be keyword arguments"),
        ("score", "scaled_dot(q=1)", "unknown argument 'q'; scaled_dot takes scale"),
        ("mask", "causal(bogus=1)", "unknown argument 'bogus'; causal takes offset"),
        ("mask", "causal() & chunked()", "in mask spec .*: chunked.* missing .* 'size'"),
        ("mask", "global_tokens(1, 2)", "takes 1 positional argument but 2 were given"),
        ("attention", "performer(num_features=0)", "Performer: num_features must be an int >= 1"),
        ("attention", "performer(seed=1.5)", "Performer: seed must be an int, got 1.5"),
        ("attention", "linear(chunk=0)", "Linear: chunk must be an int >= 1"),
        ("attention", "linformer(projected_length=0)", "projected_length must be an int >= 1"),
        ("attention", "linformer(max_length=-1)", "max_length must be an int >= 1"),
        ("attention", "performer(features=8)", "performer takes num_features, seed, chunk"),
    ],
)
def test_bad_specs_raise_a_clear_error(kind, spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        catalog.get(kind, spec)


def test_factory_specs_take_their_own_positional_arguments():
    shape = (1, 1, 6, 6)
    np.testing.assert_array_equal(
        catalog.get("mask", "sliding_window(2, right=1)").dense(shape),
        masks.sliding_window(left=2, right=1).dense(shape),
    )


@pytest.mark.parametrize("spec", [42, None, 1.5])
def test_specs_that_are_neither_strings_nor_callables_raise_type_error(spec):
    with pytest.raises(TypeError, match=r"weighting must be a catalog spec .* or a callable, got"):
        catalog.get("weighting", spec)


def test_datasets_and_models_load_lazily():
    assert "reverse" in catalog.names("dataset") and "tiny_shakespeare" in catalog.names("dataset")
    assert catalog.names("model") == [
        "decoder_lm",
        "encoder_classifier",
        "encoder_decoder",
        "keyword_transformer",
        "las",
        "rnn_seq2seq",
        "show_attend_tell",
        "speech_transformer",
        "transformer_captioner",
        "vit",
    ]
    assert {"digits", "shapes_captions", "cifar10", "coco_captions"} <= set(
        catalog.names("dataset")
    )
    assert {"spoken_strings", "spoken_digit", "speech_commands", "librispeech"} <= set(
        catalog.names("dataset")
    )


def test_names_lists_every_entry():
    assert catalog.names("weighting") == [
        "entmax15",
        "relu",
        "sigmoid",
        "softmax",
        "softmax_with_sink",
        "sparsemax",
        "squared_relu",
    ]


def test_import_attn_needs_jax_alone():
    """The pure core must import with flax, optax, orbax and tensorflow unavailable."""
    blocked = ["flax", "optax", "orbax", "tensorflow", "tensorflow_datasets", "grain"]
    code = (
        f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
        "import attn\n"
        f"loaded = [m for m in {blocked!r} if sys.modules.get(m) is not None]\n"
        "assert not loaded, loaded\nprint('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_flax_subpackages_load_on_first_attribute_access():
    """``import attn`` leaves attn.nn (and flax) unloaded; ``attn.nn`` then imports it."""
    code = (
        "import sys\nimport attn\n"
        "assert 'flax' not in sys.modules and 'attn.nn' not in sys.modules\n"
        "assert attn.nn.MultiHeadAttention is sys.modules['attn.nn'].MultiHeadAttention\n"
        "assert 'nn' in dir(attn) and 'decoder_lm' in attn.models.MODELS\n"
        "try:\n    attn.no_such_module\nexcept AttributeError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "module 'attn' has no attribute 'no_such_module'"
