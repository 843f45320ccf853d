"""Whole-or-nothing file writes: a temp file in the target directory, then one rename.

A reader (or a crashed run) therefore never sees a half-written JSON, image or video.
"""
from __future__ import annotations

import json
import os
import tempfile


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
  path = os.path.abspath(os.fspath(path))
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)            # mkstemp creates 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> str:
  return write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())
