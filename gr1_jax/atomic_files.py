"""Whole-or-nothing file writes, to local paths or URLs (gs://bucket/run/summary.json).

A reader (or a crashed run) therefore never sees a half-written JSON, image or video.
Locally that takes a temp file in the target directory, then one rename. Object
stores (GCS, S3) have no rename, but an object only becomes visible once its upload
completes, so there the object is written in one go: the same guarantee, and
no temp object left behind by a crash.
"""
from __future__ import annotations

import json
import os
import tempfile

from gr1_jax import url_paths


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
  path = url_paths.absolute(path)
  if url_paths.is_url(path):
    _write_object(path, data)
    return path
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


def _write_object(url: str, data: bytes) -> None:
  # etils.epath where it has a backend, so these files take the same route as Orbax's
  # (tf.io.gfile when TensorFlow is installed); fsspec for the other schemes (memory://, ...).
  url_paths.require_filesystem(url, "writing")
  if url_paths.has_epath_backend(url):
    url_paths.as_epath(url).write_bytes(data)
  else:
    import fsspec
    with fsspec.open(url, "wb") as f:
      f.write(data)


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> str:
  return write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())

