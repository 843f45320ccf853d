"""Workdir and checkpoint paths that are either local or URLs (gs://bucket/run, s3://...).

On a TPU pod every host must see the same workdir, which in practice is a bucket.
`os.path.abspath("gs://b/run")` would turn that into "<cwd>/gs:/b/run", so every
path a run writes or reads goes through `absolute` first: local paths become
absolute, URLs pass through untouched. Orbax opens them with etils.epath, whose
backend for URLs is fsspec (or tf.io.gfile when TensorFlow is installed); the
run's own files (gr1_jax/atomic_files.py, TensorBoard events) use the same
backends, so one installed fsspec implementation (gcsfs for gs://) serves all.
"""
from __future__ import annotations

import importlib.util
import os
import posixpath
import re

from etils import epath

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

# fsspec names the missing package only inside a sentence; these are the usual ones.
_FSSPEC_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "s3a": "s3fs", "az": "adlfs",
                    "abfs": "adlfs", "hf": "huggingface_hub"}


def is_url(path: str | os.PathLike) -> bool:
  return bool(_URL.match(os.fspath(path)))


def scheme(path: str | os.PathLike) -> str | None:
  path = os.fspath(path)
  return path.split("://", 1)[0] if is_url(path) else None


def absolute(path: str | os.PathLike) -> str:
  """URLs unchanged; local paths made absolute (the cwd may differ when the path is read back)."""
  path = os.fspath(path)
  if not path:
    raise ValueError("expected a local path or a URL such as gs://bucket/run, got an empty string")
  return path if is_url(path) else os.path.abspath(path)


def join(path: str | os.PathLike, *parts: str) -> str:
  path = os.fspath(path)
  return posixpath.join(path, *parts) if is_url(path) else os.path.join(path, *parts)


def has_epath_backend(path: str | os.PathLike) -> bool:
  """False for URL schemes etils.epath (and so Orbax) cannot open, e.g. memory://."""
  try:
    epath.Path(os.fspath(path))
  except KeyError:
    return False
  return True


def as_epath(path: str | os.PathLike, what: str = "path") -> epath.Path:
  """The epath Orbax will open; raises now if its scheme has no backend or package."""
  path = absolute(path)
  require_filesystem(path, f"opening the {what}")
  if not has_epath_backend(path):
    raise ValueError(f"{what} {path}: Orbax checkpoints go through etils.epath, which opens local paths "
                     f"and gs://, s3://, az:// or hf:// URLs, not {scheme(path)}://")
  return epath.Path(path)


def require_filesystem(path: str | os.PathLike, action: str) -> None:
  """Raises now, naming the package to install, if a URL's filesystem is not importable.

  `action` completes the sentence "<action> <path> needs ...", e.g. "writing
  TensorBoard events to". Without this check the first write to gs:// fails
  wherever it happens to be: mid-run in a TensorBoard flush, or only on the
  host that writes the images.
  """
  protocol = scheme(path)
  if protocol is None:
    return
  if protocol == "gs" and importlib.util.find_spec("tensorflow") is not None:
    return   # etils.epath then uses tf.io.gfile, which speaks gs:// itself
  package = _FSSPEC_PACKAGES.get(protocol)
  install = f"`pip install {package}`" if package else f"the fsspec implementation of {protocol}://"
  try:
    import fsspec
  except ImportError as e:
    raise ImportError(f"{action} {path} needs `pip install fsspec` and {install}") from e
  try:
    fsspec.get_filesystem_class(protocol)
  except ImportError as e:
    raise ImportError(f"{action} {path} needs {install} ({e})") from e
  except ValueError as e:
    raise ValueError(f"{action} {path}: no fsspec filesystem handles {protocol}:// URLs") from e
