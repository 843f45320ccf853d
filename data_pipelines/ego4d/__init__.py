"""Ego4D (and generic video-language) clips for GR-1 stage-1 video pretraining.

  make_fake.py   small Ego4D-layout corpus for tests / demo
  text.py        narration cleaning (#C C, #O, #unsure)
  clips.py       which clips and which source frames (3 s around a narration, 10 fps)
  decode.py      PyAV decoding, one seek per segment, resize + crop 224, JPEG
  records.py     one ArrayRecord record per clip; shard names and completion markers
  prepare.py     sharded preparation CLI (python -m data_pipelines.ego4d.prepare)
  tfds_builder.py the same as a TFDS builder that runs under Apache Beam
  pipeline.py    grain windows, mixing, sharding, checkpointable iterators
No JAX is imported here.
"""
