"""Device mesh and the one table that maps logical axis names to mesh axes.

The mesh has three axes:
  data    pure data parallelism (parameters replicated)
  fsdp    data parallelism whose parameters and optimizer state are sharded over
          their 'embed' dimension (ZeRO-3 style; gathered per layer by XLA)
  tensor  Megatron-style model parallelism over attention heads and MLP width
The batch is split over ('data', 'fsdp'). Modules only name their axes
(gr1_jax.modules.partitioning); `LOGICAL_AXIS_RULES` below is the single place
that decides where those names go.

The mesh uses Auto axis types (GSPMD propagation): the model code carries no
sharding annotations, so with Explicit axes every op would need one.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from gr1_jax.user_errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_AXIS_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", None),
)


def resolve_mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """{'data': d, 'fsdp': f, 'tensor': t} with at most one -1 -> concrete shape over num_devices."""
  unknown = sorted(set(mesh_config) - set(MESH_AXES))
  if unknown:
    raise ConfigError(f"unknown mesh axis config.mesh.{unknown[0]}; mesh axes are {MESH_AXES}")
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  fill = [axis for axis, size in zip(MESH_AXES, sizes) if size == -1]
  bad = [f"config.mesh.{axis}={size}" for axis, size in zip(MESH_AXES, sizes) if size == 0 or size < -1]
  if bad:
    raise ConfigError(f"{', '.join(bad)}: mesh sizes must be positive or -1 (fill)")
  if len(fill) > 1:
    raise ConfigError(f"config.mesh: only one axis may be -1, got {', '.join('config.mesh.' + a for a in fill)}")
  known = math.prod(s for s in sizes if s != -1)
  if num_devices % known:
    raise ConfigError(f"config.mesh={dict(zip(MESH_AXES, sizes))}: the fixed axes multiply to {known}, "
                      f"which does not divide the {num_devices} devices; choose sizes whose product divides "
                      f"{num_devices} (one axis may be -1 to take the rest)")
  if fill:
    sizes[MESH_AXES.index(fill[0])] = num_devices // known
  elif known != num_devices:
    raise ConfigError(f"config.mesh={dict(zip(MESH_AXES, sizes))} has {known} devices but "
                      f"{num_devices} are available; set one axis to -1 to fill")
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence | None = None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  shape = resolve_mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def batch_shards(mesh: jax.sharding.Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh, *, field: str = "config.batch_size") -> None:
  """The global batch must split evenly over the batch axes and over the processes."""
  shards = batch_shards(mesh)
  if global_batch % shards:
    raise ConfigError(f"{field}={global_batch} is not divisible by the mesh's data x fsdp = {shards} "
                      f"batch shards (mesh {dict(mesh.shape)}); use a multiple of {shards}")
  if global_batch % jax.process_count():
    raise ConfigError(f"{field}={global_batch} is not divisible by the {jax.process_count()} processes; "
                      f"use a multiple of {jax.process_count()}")


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _mesh_spec(logical: P, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> P:
  rules = dict(LOGICAL_AXIS_RULES)
  spec, used = [], set()
  for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
    axes = rules.get(name) if name is not None else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    size = math.prod(mesh.shape[a] for a in axes)
    # Square (embed, embed) kernels shard their first dim only: a mesh axis may appear
    # once per array. A dimension the axis does not divide (e.g. 3 heads over tensor=2)
    # stays replicated rather than padded.
    if size > 1 and dim % size == 0 and not used & set(axes):
      spec.append(axes[0] if len(axes) == 1 else axes)
      used |= set(axes)
    else:
      spec.append(None)
  return P(*spec)


def state_shardings(state: nnx.State, mesh: jax.sharding.Mesh):
  """Pure-dict tree of NamedShardings for an (abstract) nnx.State, from its logical axis names."""
  specs = nnx.get_partition_spec(state)
  is_var = lambda x: isinstance(x, nnx.Variable)

  def leaf(var, spec_var):
    value = var.get_value()
    return NamedSharding(mesh, _mesh_spec(spec_var.get_value(), value.shape, mesh))

  shardings = jax.tree.map(leaf, state, specs, is_leaf=is_var)
  return nnx.to_pure_dict(shardings)


def describe(mesh: jax.sharding.Mesh) -> str:
  devices = np.asarray(mesh.devices)
  return (f"mesh {dict(mesh.shape)} over {devices.size} {devices.flat[0].platform} devices, "
          f"{jax.process_count()} process(es)")
