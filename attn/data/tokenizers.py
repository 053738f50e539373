"""Tokenizers that need no vocabulary file: bytes, characters, or a fixed symbol list.

Every tokenizer reserves the same special ids, so padding with 0 is uniform across tasks:
``PAD_ID = 0``, ``BOS_ID = 1``, ``EOS_ID = 2``; real tokens start at ``NUM_SPECIAL = 3``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "NUM_SPECIAL",
    "PAD_ID",
    "ByteTokenizer",
    "ClassLabels",
    "SymbolTokenizer",
    "Tokenizer",
]

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
NUM_SPECIAL = 3
_SPECIAL_STRINGS = ("<pad>", "<bos>", "<eos>")


def _visible(text: str) -> str:
    """A label that stays visible on a plot axis (spaces and control characters escaped)."""
    if text == " ":
        return "␣"
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


class Tokenizer:
    """Shared behaviour: special ids, ``decode`` and ``token_strings`` over a token table."""

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``, optionally wrapped in bos/eos."""
        ids = self._encode(text)
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``: stops at the first eos, skips pad and bos."""
        tokens = []
        for token in self._check(ids):
            if token == EOS_ID:
                break
            if token >= NUM_SPECIAL:
                tokens.append(token)
        return self._decode(tokens)

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """One printable label per id (for attention-map axes); specials as ``<pad>`` etc."""
        return [
            _SPECIAL_STRINGS[token] if token < NUM_SPECIAL else _visible(self._token_text(token))
            for token in self._check(ids)
        ]

    def _check(self, ids: Iterable[int]) -> list[int]:
        tokens = [int(token) for token in np.asarray(ids).reshape(-1)]
        bad = [token for token in tokens if not 0 <= token < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} outside [0, vocab_size={self.vocab_size})")
        return tokens

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _token_text(self, token: int) -> str:
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: id = byte + 3, ``vocab_size`` 259. Decoding replaces broken UTF-8."""

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + 256

    def _encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of raw bytes (TFDS text features arrive as bytes)."""
        return (np.frombuffer(data, dtype=np.uint8).astype(np.int32) + NUM_SPECIAL).tolist()

    def _decode(self, ids: list[int]) -> str:
        return bytes(token - NUM_SPECIAL for token in ids).decode("utf-8", errors="replace")

    def _token_text(self, token: int) -> str:
        byte = token - NUM_SPECIAL
        # A lone byte of a multi-byte character is not a character; show it as an escape.
        return chr(byte) if byte < 128 else f"\\x{byte:02x}"

    def __repr__(self) -> str:
        return "ByteTokenizer()"


class SymbolTokenizer(Tokenizer):
    """A fixed list of symbols: id = index + 3.

    With ``separator=""`` every symbol is one character (character level); otherwise text is
    split on ``separator`` (whitespace runs when it is ``" "``) and joined with it on decode.
    """

    def __init__(self, symbols: Sequence[str], *, separator: str = " "):
        symbols = list(symbols)
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be distinct, got {symbols}")
        if not separator and any(len(symbol) != 1 for symbol in symbols):
            raise ValueError("with separator='' every symbol must be one character")
        if separator and any(not symbol or separator in symbol for symbol in symbols):
            raise ValueError(f"symbols must be non-empty and must not contain {separator!r}")
        self.symbols = tuple(symbols)
        self.separator = separator
        self._ids = {symbol: NUM_SPECIAL + i for i, symbol in enumerate(symbols)}

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + len(self.symbols)

    def _encode(self, text: str) -> list[int]:
        pieces = list(text) if not self.separator else text.split(self.separator.strip() or None)
        unknown = sorted({piece for piece in pieces if piece not in self._ids})
        if unknown:
            raise ValueError(f"unknown symbols {unknown[:10]}; known: {list(self.symbols)[:40]}")
        return [self._ids[piece] for piece in pieces]

    def _decode(self, ids: list[int]) -> str:
        return self.separator.join(self.symbols[token - NUM_SPECIAL] for token in ids)

    def _token_text(self, token: int) -> str:
        return self.symbols[token - NUM_SPECIAL]

    def __repr__(self) -> str:
        return f"SymbolTokenizer({len(self.symbols)} symbols, separator={self.separator!r})"


class ClassLabels:
    """Class names for "classify" targets: id = class index (no special ids)."""

    pad_id = None

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)

    @property
    def vocab_size(self) -> int:
        return len(self.names)

    def encode(self, text: str) -> list[int]:
        """``[index of text]``."""
        if text not in self.names:
            raise ValueError(f"unknown class {text!r}; classes: {list(self.names)}")
        return [self.names.index(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Class names of ``ids``, space separated."""
        return " ".join(self.token_strings(ids))

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """The class name of each id."""
        labels = [int(i) for i in np.asarray(ids).reshape(-1)]
        bad = [i for i in labels if not 0 <= i < len(self.names)]
        if bad:
            raise ValueError(f"class ids {bad[:5]} outside [0, {len(self.names)})")
        return [self.names[i] for i in labels]

    def __repr__(self) -> str:
        return f"ClassLabels({list(self.names)})"
