"""Tokenizers: round trips, special ids, plot labels, errors."""

from __future__ import annotations

import numpy as np
import pytest

from attn.data import BOS_ID, EOS_ID, PAD_ID, ByteTokenizer, ClassLabels, SymbolTokenizer


@pytest.mark.parametrize("text", ["", "hello, world", "naïve café ☕", "line\nbreak\ttab"])
def test_byte_round_trip(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert min(ids, default=3) >= 3 and max(ids, default=3) < tokenizer.vocab_size == 259
    assert tokenizer.decode(ids) == text


def test_specials_are_shared_and_decode_stops_at_eos():
    tokenizer = ByteTokenizer()
    assert (PAD_ID, BOS_ID, EOS_ID) == (0, 1, 2)
    ids = tokenizer.encode("ab", add_bos=True, add_eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert tokenizer.decode([*ids, *tokenizer.encode("junk"), PAD_ID]) == "ab"
    assert tokenizer.decode(np.array([PAD_ID, *tokenizer.encode("x"), PAD_ID])) == "x"


def test_token_strings_are_visible_labels():
    tokenizer = ByteTokenizer()
    ids = [BOS_ID, *tokenizer.encode("a b\n"), EOS_ID, PAD_ID]
    assert tokenizer.token_strings(ids) == ["<bos>", "a", "␣", "b", "\\n", "<eos>", "<pad>"]
    assert len(tokenizer.token_strings(tokenizer.encode("é"))) == 2  # two UTF-8 bytes


def test_symbol_tokenizer_words_and_characters():
    words = SymbolTokenizer(["[MAX", "]", "3", "7"])
    ids = words.encode("[MAX 3  7 ]")
    assert ids == [3, 5, 6, 4] and words.vocab_size == 7
    assert words.decode(ids) == "[MAX 3 7 ]"
    assert words.token_strings(ids) == ["[MAX", "3", "7", "]"]
    chars = SymbolTokenizer("0123456789-", separator="")
    assert chars.decode(chars.encode("2021-03-03", add_eos=True)) == "2021-03-03"


def test_class_labels():
    labels = ClassLabels(["neg", "pos"])
    assert labels.vocab_size == 2 and labels.encode("pos") == [1]
    assert labels.decode(np.array([1, 0])) == "pos neg"
    assert labels.token_strings([0]) == ["neg"]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown symbols"):
        SymbolTokenizer(["a", "b"]).encode("a c")
    with pytest.raises(ValueError, match="outside"):
        ByteTokenizer().decode([300])
    with pytest.raises(ValueError, match="distinct"):
        SymbolTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="one character"):
        SymbolTokenizer(["ab"], separator="")
    with pytest.raises(ValueError, match="unknown class"):
        ClassLabels(["neg", "pos"]).encode("meh")
