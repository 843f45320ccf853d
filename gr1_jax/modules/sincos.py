"""Fixed 2-D sine-cosine position table in MAE's layout.

MAE builds its meshgrid width-first, so the FIRST half of the channels encodes
the column index and the second half the row index; within each half, D/4
sines then D/4 cosines at frequencies 1/10000^(k/(D/4)). Patch k sits at
(row k // grid, col k % grid). GR-1's decoder_pos_embed and MAE's pos_embed
both use this table.
"""
from __future__ import annotations

import numpy as np


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = positions.reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid: int) -> np.ndarray:
  """(grid*grid, dim) float32 table; dim must be a multiple of 4."""
  if dim % 4:
    raise ValueError(f"sin-cos table width {dim} must be a multiple of 4")
  rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64),
                           indexing="ij")
  table = np.concatenate([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], axis=1)
  return table.astype(np.float32)
