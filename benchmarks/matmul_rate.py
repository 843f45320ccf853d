"""This machine's f32 matmul rate, the yardstick the speed benchmarks print beside their figures.

Flag-free, so benchmarks with their own absl flags can share it."""
from __future__ import annotations

import time


def matmul_timer(n: int):
  """A function returning one f32 n^3 matmul's FLOP/s (compiled once)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()

  def measure(repeats: int = 5) -> list[float]:
    rates = []
    for _ in range(repeats):
      t = time.perf_counter()
      f(a, b).block_until_ready()
      rates.append(2 * n ** 3 / (time.perf_counter() - t))
    return rates
  return measure
