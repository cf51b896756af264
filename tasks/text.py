"""Text without downloads: a word vocabulary built from the training captions, and two encoders.

The tokenizer lower-cases and keeps runs of letters and digits; the vocabulary holds the training
text's most frequent words (ties broken alphabetically, so it is a function of the data alone),
with id 0 for padding and 1 for a word it has not seen. A caption becomes `max_words` ids, cut or
padded with 0; an all-zero row is "no caption" (an image with fewer captions than the others).

Encoders map (n, max_words) ids to (n, dim) vectors:
- `gru`: a one-layer GRU, the state at the caption's last word (Cho et al., 2014; the text side of
  VSE++, Faghri et al., 2018);
- `transformer`: two pre-norm self-attention layers with learned positions, mean over the words
  (Vaswani et al., 2017), small enough for a CPU.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from flowerbed.tasks.errors import ConfigError

PAD, UNKNOWN = 0, 1
WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def vocabulary(texts: Iterable[str], size: int) -> dict[str, int]:
    """word -> id for the `size - 2` most frequent words of `texts` (ids 2...)."""
    counts = Counter(w for t in texts for w in words(t))
    kept = sorted(counts, key=lambda w: (-counts[w], w))[: max(0, size - 2)]
    return {w: i + 2 for i, w in enumerate(kept)}


def encode(texts: Iterable[str], vocab: dict[str, int], max_words: int) -> np.ndarray:
    """(n, max_words) int64 ids, cut or padded with PAD."""
    texts = list(texts)
    ids = np.zeros((len(texts), max_words), np.int64)
    for row, text in enumerate(texts):
        tokens = [vocab.get(w, UNKNOWN) for w in words(text)][:max_words] or [UNKNOWN]  # a caption of symbols is still one
        ids[row, : len(tokens)] = tokens
    return ids


class GRUEncoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.dim = dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(ids))
        last = (ids != PAD).sum(1).clamp(min=1) - 1
        return out[torch.arange(len(ids), device=ids.device), last]


class TransformerEncoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int, max_words: int, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_words, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.dim = dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        valid = ids != PAD
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid[:, 1:]], dim=1)  # an empty row attends to its first slot
        h = self.layers(self.embed(ids) + self.position[: ids.shape[1]], src_key_padding_mask=~valid)
        weights = valid.unsqueeze(-1).to(h.dtype)
        return (h * weights).sum(1) / weights.sum(1)


TEXT_ENCODERS = ("gru", "transformer")


def text_encoder(name: str, vocab_size: int, dim: int, max_words: int) -> nn.Module:
    if name == "gru":
        return GRUEncoder(vocab_size, dim)
    if name == "transformer":
        return TransformerEncoder(vocab_size, dim, max_words)
    raise ConfigError.invalid("model.text", name, "one of " + ", ".join(TEXT_ENCODERS))
