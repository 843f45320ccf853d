"""The attention mask: the drawn golden matrix, padding, stage layouts."""
import numpy as np
import pytest

from tests.conftest import tiny_config
from gr1_jax.model_config import GR1Config, ResamplerConfig
from gr1_jax.modules import attention_mask as am
from gr1_jax.modules.token_layout import TokenLayout


def _drawn_matrix() -> np.ndarray:
  """Parses the '#'/'.' rows of the docstring picture."""
  rows = []
  for line in am.__doc__.splitlines():
    cells = line.split()
    marks = [c for c in cells if c in ("#", ".")]
    if len(marks) >= 20 and len(marks) == len([c for c in cells if len(c) == 1]) - 1:
      rows.append([c == "#" for c in marks])
  return np.array(rows, bool)


def _two_step_layout() -> TokenLayout:
  cfg = GR1Config(seq_len=2, fwd_pred_next_n=1, resampler=ResamplerConfig(num_latents=1))
  return TokenLayout.from_config(cfg)


def test_mask_equals_the_drawing_in_the_docstring():
  drawn = _drawn_matrix()
  assert drawn.shape == (22, 22)
  got = np.asarray(am.attention_mask(_two_step_layout(), np.ones((1, 2))))[0, 0]
  np.testing.assert_array_equal(got, drawn)


def test_padded_step_columns_are_invisible():
  layout = _two_step_layout()
  got = np.asarray(am.attention_mask(layout, np.array([[1, 0]])))[0, 0]
  expected = _drawn_matrix().copy()
  expected[:, 11:] = False
  np.testing.assert_array_equal(got, expected)


def test_official_layout_group_visibility():
  """gr1.md §2 worked example: 43 tokens/step, seq_len 2, both valid."""
  layout = TokenLayout.from_config(GR1Config(seq_len=2, fwd_pred_next_n=1))
  assert layout.tokens_per_step == 43
  assert [(g.name, g.count) for g in layout.groups] == [
      ("lang", 1), ("state", 1), ("patch", 9), ("cls", 1), ("hand_patch", 9), ("hand_cls", 1),
      ("act", 1), ("obs_query", 10), ("obs_hand_query", 10)]
  m = np.asarray(am.attention_mask(layout, np.ones((1, 2))))[0, 0]
  obs0, obs1 = set(range(0, 22)), set(range(43, 65))
  for row, visible in [(22, obs0), (30, obs0), (42, obs0), (65, obs0 | obs1), (70, obs0 | obs1),
                       (85, obs0 | obs1), (5, set(range(0, 6))), (50, obs0 | set(range(43, 51)))]:
    assert set(np.flatnonzero(m[row])) == visible, row
  # Nobody ever sees a query token, not even the query itself.
  query_cols = [i for i in range(86) if i % 43 >= 22]
  assert not m[:, query_cols].any()


@pytest.mark.parametrize("variant,per_step", [("pretrain", 21), ("act_only", 23), ("official", 43)])
def test_stage_layouts(variant, per_step):
  from experiments.configs import gr1_model
  cfg = GR1Config.from_dict(gr1_model.get_config(variant).to_dict())
  assert TokenLayout.from_config(cfg).tokens_per_step == per_step


def test_mask_shape_and_seq_len_check():
  layout = TokenLayout.from_config(tiny_config())
  m = am.attention_mask(layout, np.ones((3, 10)))
  assert m.shape == (3, 1, layout.num_tokens, layout.num_tokens) and m.dtype == bool
  with pytest.raises(ValueError, match="seq_len=10"):
    am.attention_mask(layout, np.ones((3, 9)))
