"""OpenAI CLIP byte-level BPE tokenizer, offline, giving the ids of `clip.tokenize`.

GR-1 feeds the frozen CLIP text tower with `clip.tokenize(instruction)`: SOT 49406,
BPE ids, EOT 49407, zeros up to 77. This module reproduces those ids from the
vocabulary file that ships with CLIP (`assets/bpe_simple_vocab_16e6.txt.gz`).

It imports no JAX (data pipelines call it per example) and no ftfy. OpenAI cleans
text with `ftfy.fix_text`; `_fix_text` below covers what can occur in typed
instructions (NFC, curly quotes, half/full-width forms, Latin ligatures, C0/C1
control characters, ANSI escapes, ftfy's extra HTML-entity pass) but does not
repair mojibake (e.g. "cafÃ©" stays as is where ftfy gives "café").
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import unicodedata
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import regex

SOT_ID = 49406
EOT_ID = 49407
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48894 merge rules are used; the file has more.
_SOT, _EOT = "<|startoftext|>", "<|endoftext|>"
_EOW = "</w>"  # end-of-word marker appended to the last symbol of every word

# CLIP's pre-tokenisation: the two special tokens, English contractions, runs of
# letters, single digits, runs of other non-space characters.
_WORD_RE = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE)
_SPACES_RE = regex.compile(r"\s+")  # `regex`, not `re`: Unicode White_Space like CLIP
_ANSI_RE = regex.compile(r"\x1b\[[0-9;]*[a-zA-Z]")
_ENTITY_RE = regex.compile(r"&#?[0-9A-Za-z]{1,24};")


def _compat(cp: int) -> str:
  """One level of the Unicode compatibility decomposition of `cp`, e.g. U+FB01 -> "fi"."""
  return "".join(chr(int(h, 16)) for h in unicodedata.decomposition(chr(cp)).split()[1:])


def _cp1252(cp: int) -> str:
  try:
    return bytes([cp]).decode("cp1252")
  except UnicodeDecodeError:
    return chr(cp)


# ftfy's character fixes as two translate() passes (the second sees the output of
# the first, as ftfy's uncurl_quotes runs after its ligature fix):
# 1. C1 controls read as Windows-1252, Latin ligatures split, half/full-width forms
#    to their normal forms (ideographic space -> " ");
_UNFOLD = {
    **{cp: _cp1252(cp) for cp in range(0x80, 0xA0)},
    **{cp: _compat(cp) for cp in [0x132, 0x133, 0x149, *range(0x1C4, 0x1CD), 0x1F1, 0x1F2, 0x1F3,
                                  *range(0xFB00, 0xFB07)]},
    **{cp: unicodedata.normalize("NFKC", chr(cp)) for cp in [0x3000, *range(0xFF01, 0xFFF0)]
       if unicodedata.normalize("NFKC", chr(cp)) != chr(cp)},
}
# 2. curly quotes straightened; control characters deleted (C0 except \t \n \f \r,
#    DEL, deprecated Arabic format controls, BOM, interlinear annotation marks).
_STRAIGHTEN = {
    0x02BC: "'", **{cp: "'" for cp in range(0x2018, 0x201C)},
    **{cp: '"' for cp in range(0x201C, 0x2020)},
    **{cp: None for cp in [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F,
                           *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]},
}


class _Vocab(NamedTuple):
  encoder: dict[str, int]              # BPE symbol -> id
  ranks: dict[tuple[str, str], int]    # merge rule -> priority (lower merges first)
  byte_chars: tuple[str, ...]          # byte value -> printable stand-in character


def _byte_chars() -> dict[int, str]:
  """Maps every byte to a printable character: visible Latin-1 bytes map to
  themselves, the 68 others to U+0100 onwards in byte order. The dict's order
  (kept bytes first) is the order of the first 256 vocabulary entries."""
  kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
  table = {b: chr(b) for b in kept}
  for b in range(256):
    if b not in table:
      table[b] = chr(0x100 + len(table) - len(kept))
  return table


@functools.lru_cache(maxsize=1)
def _vocab() -> _Vocab:
  raw = importlib.resources.files("gr1_jax").joinpath("assets", _VOCAB_FILE).read_bytes()
  lines = gzip.decompress(raw).decode("utf-8").split("\n")
  merges = [tuple(line.split()) for line in lines[1:1 + _NUM_MERGES]]  # line 0 is a header
  if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
    raise ValueError(f"{_VOCAB_FILE} is not the CLIP BPE file: expected {_NUM_MERGES} merge pairs")
  table = _byte_chars()
  symbols = [*table.values(), *(c + _EOW for c in table.values()),
             *(a + b for a, b in merges), _SOT, _EOT]
  encoder = {s: i for i, s in enumerate(symbols)}
  assert len(encoder) == VOCAB_SIZE and encoder[_SOT] == SOT_ID
  byte_chars = tuple(table[b] for b in range(256))
  return _Vocab(encoder, {m: i for i, m in enumerate(merges)}, byte_chars)


@functools.lru_cache(maxsize=1 << 16)
def _encode_word(word: str) -> tuple[int, ...]:
  """BPE ids of one pre-tokenised word (lower-case text)."""
  vocab = _vocab()
  if word in (_SOT, _EOT):
    return (vocab.encoder[word],)
  chars = [vocab.byte_chars[b] for b in word.encode("utf-8")]
  parts = chars[:-1] + [chars[-1] + _EOW]
  ranks = vocab.ranks
  while len(parts) > 1:
    # Merge every occurrence (left to right) of the adjacent pair of best rank.
    best = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, _NUM_MERGES))
    if best not in ranks:
      break
    merged, i = [], 0
    while i < len(parts):
      if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
        merged.append(parts[i] + parts[i + 1])
        i += 2
      else:
        merged.append(parts[i])
        i += 1
    parts = merged
  return tuple(vocab.encoder[p] for p in parts)


def _fix_text(text: str) -> str:
  """The part of ftfy.fix_text that matters for typed text (see module docstring)."""
  # ftfy unescapes HTML entities once per line unless the line holds a '<'.
  if "&" in text:
    text = "".join(line if "<" in line else _ENTITY_RE.sub(lambda m: html.unescape(m.group()), line)
                   for line in text.splitlines(keepends=True))
  text = _ANSI_RE.sub("", text).translate(_UNFOLD).translate(_STRAIGHTEN)
  return unicodedata.normalize("NFC", text)


def clean_text(text: str) -> str:
  """CLIP's text normalisation: fix, unescape HTML twice, collapse whitespace, lower-case."""
  text = html.unescape(html.unescape(_fix_text(text))).strip()
  return _SPACES_RE.sub(" ", text).strip().lower()


def encode(text: str) -> list[int]:
  """BPE ids of `text` without SOT/EOT (empty list for empty text)."""
  ids: list[int] = []
  for word in _WORD_RE.findall(clean_text(text)):
    ids.extend(_encode_word(word))
  return ids


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH,
             truncate: bool = False) -> np.ndarray:
  """int32 (N, context_length) ids: SOT, BPE ids, EOT, then zeros, as clip.tokenize.

  Raises ValueError for empty/whitespace-only text, and for text longer than
  context_length - 2 BPE ids unless `truncate` (then the last kept id is EOT).
  """
  if isinstance(texts, str):
    texts = [texts]
  if context_length < 2:
    raise ValueError(f"context_length={context_length}, expected >= 2 (room for SOT and EOT)")
  out = np.zeros((len(texts), context_length), dtype=np.int32)
  for row, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{row}] is {type(text).__name__}, expected str")
    ids = [SOT_ID, *encode(text), EOT_ID]
    if len(ids) == 2:
      raise ValueError(f"texts[{row}]={text!r} is empty after cleaning, expected an instruction")
    if len(ids) > context_length:
      if not truncate:
        raise ValueError(f"texts[{row}]={text[:60]!r} has {len(ids)} tokens with SOT/EOT, expected "
                         f"<= context_length={context_length} (pass truncate=True to cut it)")
      ids = ids[:context_length]
      ids[-1] = EOT_ID
    out[row, :len(ids)] = ids
  return out
