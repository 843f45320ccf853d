"""msgpack with numpy arrays, byte-compatible with openpi's client (openpi_client.msgpack_numpy).

The wire format (msgpack maps whose keys are msgpack *bin* strings):

    array  -> {b"__ndarray__": True, b"data": <raw bytes, C order>, b"dtype": dtype.str, b"shape": [..]}
    scalar -> {b"__npgeneric__": True, b"data": <the Python value>, b"dtype": dtype.str}

dtype.str carries the byte order ("<f4", "|u1"), so a big-endian peer decodes correctly.
Object, void (structured) and complex dtypes are refused in both directions: an object
array would need pickle, which must never run on bytes from the network.

Decoding builds the array on the message's own buffer (no copy): arrays come back
read-only. Anything malformed raises WireFormatError with a one-line reason.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_ARRAY = b"__ndarray__"
_SCALAR = b"__npgeneric__"
_REFUSED_KINDS = "OVc"   # object, void / structured, complex


class WireFormatError(ValueError):
  """Bytes that are not a message of this format; the message says why."""


def _refuse(dtype: np.dtype, what: str):
  raise WireFormatError(f"{what} has dtype {dtype}, which the wire format does not carry "
                        "(only bool, integer, float and string dtypes)")


def _encode(obj: Any):
  """msgpack's `default` hook: numpy arrays and scalars -> tagged maps."""
  if isinstance(obj, np.ndarray):
    if obj.dtype.kind in _REFUSED_KINDS:
      _refuse(obj.dtype, "an array")
    return {_ARRAY: True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
            b"shape": list(obj.shape)}
  if isinstance(obj, np.generic):
    if obj.dtype.kind in _REFUSED_KINDS:
      _refuse(obj.dtype, "a scalar")
    return {_SCALAR: True, b"data": obj.item(), b"dtype": obj.dtype.str}
  raise TypeError(f"cannot serialise an object of type {type(obj).__name__}")


def _dtype(value) -> np.dtype:
  if not isinstance(value, str):
    raise WireFormatError(f"array dtype must be a string like '<f4', got {type(value).__name__}")
  try:
    dtype = np.dtype(value)
  except TypeError as exc:
    raise WireFormatError(f"unknown array dtype {value!r}") from exc
  if dtype.kind in _REFUSED_KINDS:
    _refuse(dtype, "an incoming array")
  return dtype


def _decode(obj: dict):
  """msgpack's `object_hook`: tagged maps -> numpy arrays and scalars, other maps unchanged."""
  if _ARRAY in obj:
    dtype = _dtype(obj.get(b"dtype"))
    shape, data = obj.get(b"shape"), obj.get(b"data")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
      raise WireFormatError(f"array shape must be a list of non-negative integers, got {shape!r}")
    if not isinstance(data, bytes):
      raise WireFormatError(f"array data must be bytes, got {type(data).__name__}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
      raise WireFormatError(f"array of shape {tuple(shape)} and dtype {dtype.str} needs {expected} "
                            f"bytes, the message has {len(data)}")
    return np.ndarray(shape=tuple(shape), dtype=dtype, buffer=data)
  if _SCALAR in obj:
    dtype = _dtype(obj.get(b"dtype"))
    try:
      return dtype.type(obj.get(b"data"))
    except (TypeError, ValueError, OverflowError) as exc:
      raise WireFormatError(f"scalar {obj.get(b'data')!r} does not fit dtype {dtype.str}") from exc
  return obj


def packb(obj: Any) -> bytes:
  """Serialises dicts / lists / str / numbers / bytes / numpy arrays and scalars."""
  return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes) -> Any:
  """The inverse of packb (and of openpi_client.msgpack_numpy.packb); WireFormatError if malformed."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise WireFormatError(f"expected a binary message, got {type(data).__name__}")
  try:
    return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
  except WireFormatError:
    raise
  except Exception as exc:  # msgpack raises assorted errors (ExtraData, FormatError, ValueError, ...)
    raise WireFormatError(f"not a msgpack message ({type(exc).__name__}: {exc})") from exc
