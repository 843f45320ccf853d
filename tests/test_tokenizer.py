"""gr1_jax.tokenizer against ids produced by OpenAI's own CLIP tokenizer (ftfy installed)."""
import subprocess
import sys

import numpy as np
import pytest

from gr1_jax import tokenizer
from gr1_jax.tokenizer import EOT_ID, SOT_ID, tokenize

# BPE ids between SOT and EOT, from OpenAI CLIP's simple_tokenizer (clip-anytorch 2.6.0).
GOLDEN = [
    ("a photo of a cat", [320, 1125, 539, 320, 2368]),
    ("push the sliding door to the left side", [6831, 518, 21468, 2489, 531, 518, 1823, 1145]),
    ("lift the red block from the table", [6779, 518, 736, 4593, 633, 518, 2175]),
    ("turn on the lightbulb", [2105, 525, 518, 3885, 22373]),
    ("place the block in the sliding cabinet", [1445, 518, 4593, 530, 518, 21468, 9937]),
    ("stack the blocks", [11257, 518, 10113]),
    ("rotate the red block to the right", [10055, 671, 518, 736, 4593, 531, 518, 1155]),
    ("PUSH The Sliding DOOR!", [6831, 518, 21468, 2489, 256]),
    ("  open\tthe \n drawer.  ", [1488, 518, 23219, 269]),
    ("don't push it, it's the robot's", [847, 713, 6831, 585, 267, 585, 568, 518, 8797, 568]),
    ("we're done; they'll see", [649, 982, 1700, 282, 889, 1342, 862]),
    ("move 12.5 cm, then rotate 90 degrees", [2783, 272, 273, 269, 276, 3741, 267, 1594, 10055, 671, 280, 271, 8000]),
    ("pick&place (left) [right]?", [3142, 261, 1445, 263, 1823, 264, 314, 1155, 60, 286]),
    ("fish &amp; chips", [2759, 261, 8855]),
    ("it\u2019s \u201ccurly\u201d", [585, 568, 257, 20795, 257]),
    ("\uff21\uff22\uff23 \ufb01sh", [5334, 2759]),
    ("caf\u00e9 na\u00efve", [15304, 1097, 35689, 563]),
    ("<|endoftext|>", [49407]),
    ("supercalifragilisticexpialidocious", [1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466]),
    ("a\x0bb bell\x07", [3937, 3718]),
]


@pytest.mark.parametrize("text,ids", GOLDEN, ids=[repr(t)[:30] for t, _ in GOLDEN])
def test_golden_ids(text, ids):
  row = tokenize(text)[0]
  expected = np.zeros(77, np.int32)
  expected[:len(ids) + 2] = [SOT_ID, *ids, EOT_ID]
  np.testing.assert_array_equal(row, expected)


def test_batch_shape_dtype_padding():
  texts = [t for t, _ in GOLDEN[:4]]
  out = tokenize(texts)
  assert out.shape == (4, 77) and out.dtype == np.int32
  for row, (_, ids) in zip(out, GOLDEN[:4]):
    assert row[0] == SOT_ID and row[len(ids) + 1] == EOT_ID
    assert not row[len(ids) + 2:].any()
    # CLIP's text tower pools at argmax(ids): that must be the EOT position.
    assert row.argmax() == len(ids) + 1
  assert tokenize(texts[0], context_length=10).shape == (1, 10)
  np.testing.assert_array_equal(tokenize(("stack the blocks",)), tokenize("stack the blocks"))


def test_too_long_raises_naming_text_and_count():
  text = "push the red block " * 30  # 120 BPE ids
  with pytest.raises(ValueError, match=r"'push the red block push.*' has 122 tokens.*context_length=77"):
    tokenize(["open the drawer", text])
  with pytest.raises(ValueError, match="has 7 tokens"):
    tokenize("a photo of a cat", context_length=6)
  tokenize("a photo of a cat", context_length=7)  # exactly fits


def test_truncate_keeps_first_ids_and_ends_with_eot():
  out = tokenize("push the red block " * 30, truncate=True)[0]
  assert out.shape == (77,) and out[0] == SOT_ID and out[-1] == EOT_ID
  # clip.tokenize(truncate=True) ends in [..., 518 'the', 736 'red', EOT].
  np.testing.assert_array_equal(out[1:5], [6831, 518, 736, 4593])
  np.testing.assert_array_equal(out[-3:], [518, 736, EOT_ID])
  np.testing.assert_array_equal(tokenize("a photo of a cat", context_length=5, truncate=True)[0],
                                [SOT_ID, 320, 1125, 539, EOT_ID])


@pytest.mark.parametrize("text", ["", "   ", "\t\n ", "\x07"])
def test_empty_text_raises(text):
  with pytest.raises(ValueError, match="empty"):
    tokenize(["open the drawer", text])


def test_non_string_raises():
  with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
    tokenize([b"open the drawer"])


def test_vocab_layout():
  vocab = tokenizer._vocab()
  assert len(vocab.encoder) == tokenizer.VOCAB_SIZE == 49408
  assert vocab.encoder["!"] == 0 and vocab.encoder["a</w>"] == 256 + ord("a") - ord("!")
  assert vocab.encoder["<|startoftext|>"] == SOT_ID and vocab.encoder["<|endoftext|>"] == EOT_ID
  assert len(set(vocab.byte_chars)) == 256


def test_does_not_import_jax():
  code = "import sys, gr1_jax.tokenizer as t; t.tokenize('open the drawer'); print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
