"""CALVIN for GR-1 fine-tuning (no JAX in here).

    python -m data_pipelines.calvin.make_fake --out /tmp/calvin_fake --frames 1200   # CALVIN-format data
    python -m data_pipelines.calvin.convert --src /data/task_D_D --data_dir /data/tfds  # -> ArrayRecord
    (from Python: data_pipelines.calvin.builder.convert(src, data_dir, workers=2))

    from data_pipelines.calvin import make_calvin_dataset, make_calvin_raw_dataset
    train = make_calvin_dataset("/data/tfds", "train", batch_size=32, seed=0, worker_count=2,
                                shard_index=jax.process_index(), shard_count=jax.process_count())
    val = make_calvin_dataset("/data/tfds", "validation", batch_size=32)
    quick = make_calvin_raw_dataset("/data/calvin_debug_dataset", "train", batch_size=8)

Modules: raw (reading + validation of split folders), make_fake (fake data),
builder / convert (TFDS builder, parallel resumable conversion), encoding
(JPEG/PNG), pipeline (Grain windows and batches).  The names below are loaded
lazily so that `python -m data_pipelines.calvin.make_fake` stays light.
"""
_PIPELINE_NAMES = ("make_calvin_dataset", "make_calvin_raw_dataset", "calvin_windows",
                   "batch_windows", "ConvertedFrames", "RawFrames", "SegmentTable")


def __getattr__(name):
  if name in _PIPELINE_NAMES:
    from data_pipelines.calvin import pipeline  # pylint: disable=import-outside-toplevel
    return getattr(pipeline, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_PIPELINE_NAMES)
