"""Reads the arrays of an .npz file without numpy's header parser, so it is safe in threads.

np.load parses every member's .npy header with ast.literal_eval. On CPython 3.11 the AST
constructor keeps its recursion-depth counter in interpreter-wide state, and two threads
parsing at once can trip it: "SystemError: AST constructor recursion depth mismatch"
(cpython#106905). The data pipelines read CALVIN frames from several threads (grain's
prefetch and the window reader), and a 2500-step fine-tune on recorded CALVIN data died of it
within its first steps. An .npy header written by numpy is a fixed one-line dict
({'descr': ..., 'fortran_order': ..., 'shape': (...), }), which a regular expression reads;
any other header (structured dtypes) goes to numpy's own reader, one thread at a time.
"""
from __future__ import annotations

import math
import re
import struct
import threading
import zipfile

import numpy as np

_HEADER = re.compile(r"\{'descr': *'([^']+)', *'fortran_order': *(True|False), *'shape': *\(([0-9, ]*)\), *\} *\n?")
_MAGIC = b"\x93NUMPY"
_FALLBACK = threading.Lock()


def _read_header(f) -> str | None:
  magic = f.read(len(_MAGIC) + 2)
  if len(magic) != len(_MAGIC) + 2 or not magic.startswith(_MAGIC):
    raise ValueError("not an .npy member (bad magic)")
  major = magic[-2]
  if major == 1:
    size_bytes, fmt, encoding = 2, "<H", "latin1"
  elif major in (2, 3):
    size_bytes, fmt, encoding = 4, "<I", "latin1" if major == 2 else "utf8"
  else:
    raise ValueError(f"unsupported .npy format version {major}")
  raw_size = f.read(size_bytes)
  if len(raw_size) != size_bytes:
    raise EOFError("truncated .npy header")
  (size,) = struct.unpack(fmt, raw_size)
  header = f.read(size)
  if len(header) != size:
    raise EOFError("truncated .npy header")
  return header.decode(encoding)


def read_member(archive: zipfile.ZipFile, key: str) -> np.ndarray:
  """The array stored as `key` (the name np.load's NpzFile shows) in an open .npz archive."""
  name = key + ".npy"
  with archive.open(name) as f:
    match = _HEADER.fullmatch(_read_header(f))
    if match is None:   # not numpy's plain layout: numpy's own parser, never two at a time
      with _FALLBACK, archive.open(name) as g:
        return np.lib.format.read_array(g, allow_pickle=False)
    dtype = np.dtype(match.group(1))
    if dtype.hasobject:
      raise ValueError(f"member {key!r} holds Python objects")
    shape = tuple(int(s) for s in match.group(3).replace(" ", "").split(",") if s)
    array = np.empty(math.prod(shape), dtype)
    view = memoryview(array).cast("B")
    got = 0
    while got < len(view):   # a zip member may arrive in pieces
      n = f.readinto(view[got:])
      if not n:
        raise EOFError(f"member {key!r}: {got} of {len(view)} data bytes")
      got += n
  if match.group(2) == "True":
    return array.reshape(shape[::-1]).transpose()
  return array.reshape(shape)


def members(archive: zipfile.ZipFile) -> list[str]:
  """The keys of an open .npz archive, as np.load's NpzFile.files lists them."""
  return [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
