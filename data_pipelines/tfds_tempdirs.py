"""Builder construction without TFDS's stray temp directories.

tfds.core.DatasetBuilder.__init__, for a dataset whose data is not prepared yet, calls
DatasetInfo.initialize_from_bucket, which makes `tempfile.mkdtemp("tfds")` before it
looks for GCS metadata and never removes it (GCS is disabled by default, so the
directory stays empty). Every conversion then leaves one empty `/tmp/tmpXXXXtfds`
behind: 133 of them after a day of tests and conversions on the development machine.
Construct builders inside `scoped_tfds_tempdirs()`: what TFDS creates with `tempfile`
during construction lands in a scratch directory that is removed on exit.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile


@contextlib.contextmanager
def scoped_tfds_tempdirs():
  """Points tempfile at a scratch directory for the duration, then deletes it.

  Wrap only the builder's construction (no other thread should be creating temp files in
  this process meanwhile: tempfile's default directory is process-wide)."""
  scratch = tempfile.mkdtemp(prefix="gr1_tfds_init_")
  previous = tempfile.tempdir
  tempfile.tempdir = scratch
  try:
    yield
  finally:
    tempfile.tempdir = previous
    shutil.rmtree(scratch, ignore_errors=True)
