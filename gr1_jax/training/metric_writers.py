"""Metric writers with clu's MetricWriter method names: TensorBoard event files + console.

clu.metric_writers (0.0.12) cannot be imported without TensorFlow (its package
__init__ imports the tf.summary writer), and TensorFlow is a 1.4 GB dependency
this project otherwise does not need. The `tensorboard` package alone writes the
same event files, so this module implements the small part of clu's interface
the training loop uses (write_scalars / write_images / write_hparams / flush /
close) on top of it. Only process 0 writes; the others get a writer that drops
everything.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping

import numpy as np

from gr1_jax import atomic_files, url_paths

log = logging.getLogger("gr1_jax.train")


class TensorBoardWriter:
  """Event files into `logdir`, a local directory or a URL (gs://bucket/run/tensorboard).

  For a URL the events go to a local staging file and every flush uploads the
  whole file as one object. Going through tensorboard's own fsspec support would
  not work on GCS: it appends each record, and gcsfs turns an append into an
  overwrite (with a warning), so the object would end up holding only the last
  record.
  """

  def __init__(self, logdir: str, upload_secs: float = 60.0):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    self._remote = logdir if url_paths.is_url(logdir) else None
    if self._remote:
      url_paths.require_filesystem(logdir, "writing TensorBoard events to")
      self._staging = tempfile.mkdtemp(prefix="gr1_tensorboard-")
      logdir = self._staging
    else:
      os.makedirs(logdir, exist_ok=True)
    self._writer = EventFileWriter(logdir)
    self._upload_secs, self._uploaded_at = upload_secs, 0.0
    if self._remote:
      self.flush()   # a bucket that cannot be written fails here, not at the first evaluation

  def _upload(self) -> None:
    (name,) = os.listdir(self._staging)
    with open(os.path.join(self._staging, name), "rb") as f:
      atomic_files.write_bytes(url_paths.join(self._remote, name), f.read())
    self._uploaded_at = time.monotonic()

  def _add(self, step: int, values: list) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary_pb2.Summary(value=values)))
    if self._remote and time.monotonic() - self._uploaded_at > self._upload_secs:
      self.flush()   # scalars also show up between evaluations (the loop flushes after each)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboard.compat.proto import summary_pb2
    self._add(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    from PIL import Image
    from tensorboard.compat.proto import summary_pb2
    values = []
    for tag, image in images.items():
      image = np.asarray(image)
      buffer = io.BytesIO()
      Image.fromarray(image).save(buffer, format="PNG")
      values.append(summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
          height=image.shape[0], width=image.shape[1], colorspace=image.shape[2],
          encoded_image_string=buffer.getvalue())))
    self._add(step, values)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2
    values = []
    for tag, text in texts.items():
      tensor = tensor_pb2.TensorProto(dtype=7, string_val=[text.encode()],  # 7 = DT_STRING
                                      tensor_shape=tensor_shape_pb2.TensorShapeProto())
      values.append(summary_pb2.Summary.Value(
          tag=tag, tensor=tensor,
          metadata=summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
              plugin_name="text"))))
    self._add(step, values)

  def write_hparams(self, hparams: Mapping) -> None:
    self.write_texts(0, {"config": "```\n" + json.dumps(dict(hparams), indent=1, default=str) + "\n```"})

  def flush(self) -> None:
    self._writer.flush()
    if self._remote:
      self._upload()

  def close(self) -> None:
    self._writer.close()
    if self._remote:
      self._upload()
      shutil.rmtree(self._staging, ignore_errors=True)


class ConsoleWriter:
  """Scalars as one log line per step; images are only counted."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    log.info("step %d: %s", step, ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(scalars.items())))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    log.info("step %d: wrote image(s) %s", step, ", ".join(sorted(images)))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    pass

  def write_hparams(self, hparams: Mapping) -> None:
    pass

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class MultiWriter:

  def __init__(self, writers):
    self._writers = list(writers)

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for writer in self._writers:
        getattr(writer, name)(*args, **kwargs)
    return call


def _fmt(v) -> str:
  v = float(v)
  return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def create_writer(logdir: str, *, active: bool):
  """TensorBoard (into logdir) + console on the writing process; a no-op writer elsewhere."""
  return MultiWriter([TensorBoardWriter(logdir), ConsoleWriter()] if active else [])
