"""gr1_jax.serving.msgpack_numpy reads and writes exactly openpi's bytes, and refuses bad input."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from gr1_jax.serving import msgpack_numpy as ours

openpi = pytest.importorskip("openpi_client.msgpack_numpy",
                             reason="openpi-client is installed apart: pip install --no-deps -r "
                                    "requirements-openpi-client.txt")


def sample():
  rng = np.random.default_rng(0)
  return {
      "observation/image": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
      "state": rng.normal(size=15),                                     # float64
      "actions": rng.normal(size=(3, 7)).astype(np.float32),
      "big_endian": np.arange(4, dtype=">i4"),
      "flags": np.array([True, False]),
      "empty": np.zeros((0, 7), np.float16),
      "strided": np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2],  # not contiguous
      "names": np.array(["a", "bc"]),
      "scalar": np.float32(1.5), "int_scalar": np.int64(-3),
      "nested": {"prompt": "open the drawer", "list": [1, 2.5, None], "bytes": b"\x00\x01"},
  }


def assert_same(a, b):
  assert type(a) is type(b) or isinstance(a, np.ndarray) and isinstance(b, np.ndarray), (a, b)
  if isinstance(a, dict):
    assert a.keys() == b.keys()
    for k in a:
      assert_same(a[k], b[k])
  elif isinstance(a, np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  elif isinstance(a, np.generic):
    assert a.dtype == b.dtype and a == b
  else:
    assert a == b


def test_same_bytes_and_both_directions():
  data = sample()
  assert ours.packb(data) == openpi.packb(data)
  assert_same(openpi.unpackb(ours.packb(data)), data)
  assert_same(ours.unpackb(openpi.packb(data)), data)
  assert_same(ours.unpackb(ours.packb(data)), data)


@pytest.mark.parametrize("value", [np.array([1 + 2j]), np.array([object()], dtype=object),
                                   np.zeros(2, dtype=[("a", "<i4")])])
def test_refuses_dtypes_without_a_safe_encoding(value):
  with pytest.raises(ValueError, match="wire format does not carry"):
    ours.packb({"x": value})


@pytest.mark.parametrize("message, reason", [
    (b"\xc1", "not a msgpack message"),
    (msgpack.packb({"a": 1}) + b"\x01", "not a msgpack message"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"1234", b"dtype": "|O", b"shape": [1]}),
     "dtype object, which the wire format does not carry"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"1234", b"dtype": "nonsense", b"shape": [1]}),
     "unknown array dtype 'nonsense'"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"123", b"dtype": "<f4", b"shape": [1]}),
     "needs 4 bytes, the message has 3"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}),
     "shape must be a list of non-negative integers"),
    (msgpack.packb({b"__npgeneric__": True, b"data": 300, b"dtype": "|u1"}), "does not fit dtype |u1"),
])
def test_malformed_messages_raise_wire_format_errors(message, reason):
  with pytest.raises(ours.WireFormatError, match=reason.replace("|", r"\|")):
    ours.unpackb(message)
