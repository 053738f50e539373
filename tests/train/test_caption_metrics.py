"""Caption metrics (BLEU-4, attention localisation) and the attention rollout, on hand-made
inputs whose answers are known."""

from __future__ import annotations

import types

import numpy as np
import pytest

from attn.data.shapes_captions import caption_tokenizer, object_of_tokens
from attn.data.task import pad_to
from attn.data.tokenizers import EOS_ID
from attn.train.caption_metrics import CaptionScores, object_regions
from attn.train.image_plots import attention_rollout, upsample

TOKENIZER = caption_tokenizer()


def test_object_regions_marks_the_regions_an_object_touches():
    object_map = np.zeros((1, 4, 6), np.uint8)
    object_map[0, 0, 0] = 1  # region (0, 0)
    object_map[0, 3, 3:5] = 2  # columns 3 and 4: regions (1, 1) and (1, 2)
    regions = object_regions(object_map, (2, 3), (2, 2))
    assert regions.shape == (1, 6, 3)
    assert regions[0, :, 1].tolist() == [True, False, False, False, False, False]
    assert regions[0, :, 2].tolist() == [False, False, False, False, True, True]
    assert regions[0, :, 0].all()  # every region shows some background


def _batch(captions: list[str], length: int = 9) -> dict[str, np.ndarray]:
    targets = np.stack([pad_to([*TOKENIZER.encode(c), EOS_ID], length) for c in captions])
    # Object 1 fills the top-left 2x2 region of a 4x4 image; object 2 the bottom-right one.
    object_map = np.zeros((len(captions), 4, 4), np.uint8)
    object_map[:, :2, :2] = 1
    object_map[:, 2:, 2:] = 2
    return {
        "targets": targets,
        "weights": (targets != 0).astype(np.float32),
        "object_of": object_of_tokens(targets),
        "object_map": object_map,
    }


def _model(alignment_bkup: np.ndarray):
    return types.SimpleNamespace(
        word_alignment=lambda batch: alignment_bkup, grid_shape=(2, 2), cell_size=(2, 2)
    )


def _looking_at_the_named_object(batch: dict[str, np.ndarray]) -> np.ndarray:
    region_of_object = {1: 0, 2: 3}  # row-major regions of the 2x2 grid
    alignment = np.full((*batch["targets"].shape, 4), 0.25)
    for b, u in zip(*np.nonzero(batch["object_of"]), strict=True):
        alignment[b, u] = 0.0
        alignment[b, u, region_of_object[batch["object_of"][b, u]]] = 1.0
    return alignment[:, None]  # one head


def test_localisation_is_one_when_each_word_looks_at_its_object_and_chance_when_uniform():
    batch = _batch(["a red circle left of a blue square", "a green triangle"])
    perfect = CaptionScores(TOKENIZER, _model(_looking_at_the_named_object(batch)))
    perfect.update(batch, batch["targets"])
    scores = perfect.result()
    assert scores["localisation"] == pytest.approx(1.0)
    assert scores["localisation_chance"] == pytest.approx(0.25)
    assert scores["bleu4"] == pytest.approx(100.0)

    uniform = CaptionScores(TOKENIZER, _model(np.full((2, 1, 9, 4), 0.25)))
    uniform.update(batch, batch["targets"])
    assert uniform.result()["localisation"] == pytest.approx(0.25)


def test_localisation_averages_the_heads_and_finds_the_best_one():
    batch = _batch(["a red circle left of a blue square"])
    looking = _looking_at_the_named_object(batch)[:, 0]
    uniform = np.full_like(looking, 0.25)
    scores = CaptionScores(TOKENIZER, _model(np.stack([uniform, looking, uniform], axis=1)))
    scores.update(batch, batch["targets"])
    result = scores.result()
    assert result["localisation"] == pytest.approx((0.25 + 1.0 + 0.25) / 3)
    assert result["localisation_best_head"] == pytest.approx(1.0)


def test_localisation_counts_only_words_after_a_right_prefix_and_skips_padding():
    batch = _batch(["a red circle left of a blue square", "a green triangle", "a red square"])
    batch["weights"][2] = 0.0  # the padded tail of an eval batch
    predictions = batch["targets"].copy()
    predictions[0, 1] = TOKENIZER.encode("green")[0]  # wrong colour: nothing after it counts
    alignment = _looking_at_the_named_object(batch)
    scores = CaptionScores(TOKENIZER, _model(alignment))
    scores.update(batch, predictions)
    assert scores.words == 2  # "green" and "triangle" of the second caption
    assert len(scores.hypotheses) == 2
    assert scores.result()["localisation"] == pytest.approx(1.0)


def test_bleu_of_a_wrong_caption_is_low():
    batch = _batch(["a red circle left of a blue square"])
    wrong = np.stack([pad_to([*TOKENIZER.encode("a cyan triangle"), EOS_ID], 9)])
    scores = CaptionScores(TOKENIZER, object())  # no word_alignment: BLEU only
    scores.update(batch, wrong)
    result = scores.result()
    assert result["bleu4"] < 10.0 and "localisation" not in result


def test_attention_rollout_multiplies_residual_mixed_layers():
    identity = np.eye(3)[None]
    np.testing.assert_allclose(attention_rollout([identity, identity]), np.eye(3))
    uniform = np.full((2, 3, 3), 1 / 3)
    layer = 0.5 * np.full((3, 3), 1 / 3) + 0.5 * np.eye(3)
    np.testing.assert_allclose(attention_rollout([uniform, uniform]), layer @ layer)
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])


def test_upsample_spreads_each_region_over_its_pixels():
    heat = upsample(np.arange(6.0), (2, 3), (5, 7))
    assert heat.shape == (5, 7)
    assert heat[0, 0] == 0.0 and heat[3, 5] == 5.0 and heat[4, :].sum() == 0.0  # row 4 is spare
