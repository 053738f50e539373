"""Error rates against hand-counted edits, the monotonicity count, TranscriptScores over padded
batches, and the alignment plot."""

import numpy as np
import pytest

from attn.data.tokenizers import EOS_ID, SymbolTokenizer
from attn.train.speech_metrics import TranscriptScores, error_rates, monotonic_steps
from attn.train.speech_plots import frames_alignment, plot_alignment

CHARS = SymbolTokenizer(list("abcdefghijklmnopqrstuvwxyz "), separator="")


def _levenshtein(reference: list[str], hypothesis: list[str]) -> int:
    """Edit distance by the textbook table (independent of jiwer)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


def test_error_rates_pool_edits_over_the_corpus():
    references = ["one two three", "move left", "stop"]
    hypotheses = ["one too three", "move left three", ""]
    rates = error_rates(references, hypotheses)
    pairs = list(zip(references, hypotheses, strict=True))
    char_edits = sum(_levenshtein(list(r), list(h)) for r, h in pairs)
    word_edits = sum(_levenshtein(r.split(), h.split()) for r, h in pairs)
    assert rates["cer"] == pytest.approx(char_edits / sum(len(r) for r in references))
    assert rates["wer"] == pytest.approx(word_edits / sum(len(r.split()) for r in references))
    # Hand-counted: "too" 1 substitution, "three" 1 insertion, "stop" 1 deletion of 6 words.
    assert rates["wer"] == pytest.approx(3 / 6)
    assert error_rates(references, references) == {"cer": 0.0, "wer": 0.0}


def test_error_rates_refuse_empty_references_and_mismatched_lists():
    with pytest.raises(ValueError, match="non-empty"):
        error_rates(["", "a"], ["a", "a"])
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rates(["a", "b"], ["a"])


def test_monotonic_steps_counts_pairs_whose_peak_does_not_go_back():
    alignment = np.eye(4)[[0, 1, 1, 3, 2]]  # peaks 0, 1, 1, 3, 2
    assert monotonic_steps(alignment) == (3, 4)
    assert monotonic_steps(alignment[:1]) == (0, 0)


class _DiagonalModel:
    """Attends to encoder step u at output step u: a perfectly monotonic speller."""

    def frame_alignment(self, batch):
        B, U = np.asarray(batch["targets"]).shape
        return np.broadcast_to(np.eye(U, 6)[None, None], (B, 2, U, 6))


def test_transcript_scores_skip_padding_rows_and_score_the_right_prefix():
    targets = np.array(
        [CHARS.encode("ab", add_eos=True), CHARS.encode("cd", add_eos=True), [0, 0, 0]]
    )
    predictions = np.array(
        [CHARS.encode("ab", add_eos=True), CHARS.encode("cx", add_eos=True), [EOS_ID, 0, 0]]
    )
    batch = {"targets": targets, "weights": (targets > 0).astype(np.float32)}
    scores = TranscriptScores(CHARS, _DiagonalModel())
    scores.update(batch, predictions)
    assert scores.references == ["ab", "cd"]  # the all-padding third row is not scored
    result = scores.result()
    assert result["cer"] == pytest.approx(1 / 4)
    # Prefixes right: 3 steps ("a", "b", EOS) and 1 ("c"): 2 + 0 pairs, both forward.
    assert (scores.forward, scores.pairs) == (2, 2)
    assert result["alignment_monotonic"] == 1.0


def test_frames_alignment_spreads_steps_over_their_frames():
    rows = frames_alignment(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), 4, 10)
    assert rows.shape == (2, 10)
    np.testing.assert_array_equal(rows[0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(rows[1], [0] * 8 + [1, 1])  # the third step is cut at 10


def test_plot_alignment_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    alignment = rng.dirichlet(np.ones(8), size=5)
    path = plot_alignment(
        rng.normal(size=(30, 80)),
        alignment,
        CHARS.token_strings([*CHARS.encode("ab c"), EOS_ID]),
        4,
        tmp_path / "plots" / "alignment.png",
        title="t",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
