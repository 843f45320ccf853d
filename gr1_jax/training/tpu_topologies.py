"""TPU slice names ("v5e-256", "v4-32") -> the topology descriptions libtpu compiles for, and chip peaks.

Cloud TPU names a slice by chips for v5e/v6e ("v5e-16" = 16 chips) but by TensorCores
for v4/v5p ("v4-32" = 16 megacore chips). `jax.experimental.topologies` wants
"gen:AxB[xC]" chip grids instead, so this table maps one to the other. A grid given
directly ("v5e:4x4") is accepted as it is.

The peaks are the published per-chip figures (bf16 dense matmul, HBM capacity and
bandwidth); the step-time estimate in experiments/compile_for.py is built on them.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import re

from gr1_jax.user_errors import UserError


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str           # topologies' name: v4, v5e, v5p, v6e
  chip_config: str          # "megacore" where two TensorCores act as one device
  cores_per_chip_in_name: int   # how Cloud TPU counts a slice: 2 (cores) for v4/v5p, 1 (chips) else
  bf16_tflops: float        # per chip, dense
  hbm_gib: float
  hbm_gbps: float           # GB/s


CHIPS = {
    "v4": Chip("v4", "megacore", 2, 275.0, 32.0, 1228.0),
    "v5e": Chip("v5e", "default", 1, 197.0, 16.0, 819.0),
    "v5p": Chip("v5p", "megacore", 2, 459.0, 95.0, 2765.0),
    "v6e": Chip("v6e", "default", 1, 918.0, 32.0, 1640.0),
}

# Chip grids of the slice shapes Cloud TPU offers (2-D for v5e/v6e, 3-D for v4/v5p).
_GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
_GRIDS_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8)}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str                 # as given
  chip: Chip
  grid: tuple[int, ...]

  @property
  def num_chips(self) -> int:
    return math.prod(self.grid)

  @property
  def topology_name(self) -> str:
    return f"{self.chip.generation}:{'x'.join(map(str, self.grid))}"

  @property
  def host_bounds(self) -> tuple[int, int, int]:
    # 4 chips per host (2x2), the common VM shape; a smaller slice is one host.
    bounds = tuple(min(2, g) for g in self.grid[:2]) + (1,)
    return bounds  # type: ignore[return-value]


def parse(name: str) -> Topology:
  """'v5e-16', 'v4-32', 'v5p-128' or 'v5e:4x4' -> Topology; UserError naming the choices."""
  grid_form = re.fullmatch(r"(v\d+[ep]?):(\d+(?:x\d+){1,2})", name)
  slice_form = re.fullmatch(r"(v\d+[ep]?)-(\d+)", name)
  generation = (grid_form or slice_form).group(1) if (grid_form or slice_form) else None
  if generation not in CHIPS:
    raise UserError(f"--topology={name!r}: expected a slice like v5e-16, v4-32, v5p-128, v6e-64 or a chip "
                     f"grid like v5e:4x4 (generations {', '.join(CHIPS)})")
  chip = CHIPS[generation]
  if grid_form:
    return Topology(name, chip, tuple(int(x) for x in grid_form.group(2).split("x")))
  count = int(slice_form.group(2))
  chips, rest = divmod(count, chip.cores_per_chip_in_name)
  grids = _GRIDS_3D if chip.cores_per_chip_in_name == 2 else _GRIDS_2D
  if rest or chips not in grids:
    unit = "TensorCores (2 per chip)" if chip.cores_per_chip_in_name == 2 else "chips"
    sizes = ", ".join(f"{generation}-{n * chip.cores_per_chip_in_name}" for n in grids)
    raise UserError(f"--topology={name!r}: {generation} slices count {unit}; known sizes: {sizes}")
  return Topology(name, chip, grids[chips])


def libtpu_available() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def devices(topology: Topology):
  """Abstract devices of the slice (needs libtpu; no TPU is touched)."""
  if not libtpu_available():
    raise UserError(f"compiling for {topology.name} needs libtpu, which is not installed in this Python: "
                    "pip install -r requirements-tpu.txt (an optional extra, ~700 MB)")
  from jax.experimental import topologies
  return topologies.get_topology_desc(platform="tpu", topology_name=topology.topology_name,
                                      chip_config_name=topology.chip.chip_config,
                                      chips_per_host_bounds=topology.host_bounds, num_slices=1).devices
