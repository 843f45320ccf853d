"""A directory that appears under its final name only once it is complete.

    with atomic_dir.building(out) as tmp:
      ...write everything into tmp...
    # now `out` holds it (an existing `out` was replaced); on an exception `tmp` is removed

Readers therefore never see a half-written dataset, and an interrupted writer leaves
only a hidden `.NAME.tmp-*` sibling, which the next `building(out)` clears away.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def building(out: str | os.PathLike) -> Iterator[Path]:
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  for stale in out.parent.glob(f".{out.name}.tmp-*"):   # left by a killed writer
    shutil.rmtree(stale, ignore_errors=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
  try:
    yield tmp
    if out.exists():
      shutil.rmtree(out)
    tmp.rename(out)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
