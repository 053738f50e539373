"""Flax NNX modules that own parameters and call the pure functions of :mod:`attn`."""

from attn.nn.attention import POSITIONALS, MultiHeadAttention
from attn.nn.dropout import Dropout
from attn.nn.rnn_attention import AdditiveAttention, BilinearAttention, LocationAwareAttention
from attn.nn.transformer import MLP, TransformerBlock, TransformerDecoder, TransformerEncoder

__all__ = [
    "MLP",
    "POSITIONALS",
    "AdditiveAttention",
    "BilinearAttention",
    "Dropout",
    "LocationAwareAttention",
    "MultiHeadAttention",
    "TransformerBlock",
    "TransformerDecoder",
    "TransformerEncoder",
]
