"""End-to-end preparation of a small Ego4D-layout corpus (make_fake -> prepare)."""
import glob
import json
import os
import re

import av
import grain
import numpy as np
import pytest

from data_pipelines.ego4d import clips, decode, make_fake, prepare, records

SECONDS = 9.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ego4d_fake"))
  desc = make_fake.make_fake(root, num_videos=2, seconds=SECONDS, size=128, codec="mpeg4", seed=3)
  return root, desc


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
  root, desc = corpus
  out = str(tmp_path_factory.mktemp("ego4d_out"))
  assert prepare.main(["--ego4d_root", root, "--out", out, "--num_shards", "2", "--no_progress"]) == 0
  return out


def _read_shard(path):
  src = grain.sources.ArrayRecordDataSource([path])
  return [src[i] for i in range(len(src))]


def _all_records(out, split="train"):
  return [r for path in records.list_shards(out, split) for r in _read_shard(path)]


def _decode_all(path):
  """Independent decode: every frame in order, no seeking."""
  with av.open(path) as c:
    return list(c.decode(video=0))


def test_frames_are_the_decoded_frames_the_rule_names(corpus, prepared):
  root, desc = corpus
  recs = [records.decode_frames(r) for r in _all_records(prepared)]
  by_uid = {}
  for header, frames in recs:
    by_uid.setdefault(header["video_uid"], []).append((header, frames))
  assert sorted(by_uid) == sorted(v["video_uid"] for v in desc["videos"])
  for video in desc["videos"]:
    decoded = _decode_all(video["path"])
    num = len(decoded)
    assert num == int(SECONDS * 30)
    narr = json.load(open(desc["narration_json"]))[video["video_uid"]]
    stamps = {n["annotation_uid"]: n["timestamp_sec"]
              for p in ("narration_pass_1", "narration_pass_2") for n in narr[p]["narrations"]}
    for header, frames in by_uid[video["video_uid"]]:
      t = stamps[header["clip_uid"]]
      # The documented rule, restated: 30 samples at 10 fps from t - 1.5 s, nearest frame, clamped.
      expected = [i for i in (int(np.floor((t - 1.5 + k / 10) * 30 + 0.5)) for k in range(30)) if 0 <= i < num]
      assert header["frame_index"] == expected, header["clip_uid"]
      assert frames.shape == (len(expected), 224, 224, 3)
      for j, idx in enumerate(expected):
        assert make_fake.read_frame_code(frames[j], video["width"], video["height"]) == idx
        ref = decode.resize_center_crop(decoded[idx], 224).astype(np.int16)
        err = np.abs(frames[j].astype(np.int16) - ref).mean()
        assert err < 4.0, (header["clip_uid"], idx, err)   # JPEG q90 only
        if idx + 1 < num:
          other = decode.resize_center_crop(decoded[idx + 1], 224).astype(np.int16)
          assert np.abs(frames[j].astype(np.int16) - other).mean() > err


def test_summary_counts_broken_missing_and_texts(corpus, prepared):
  root, desc = corpus
  markers = [records.read_marker(prepared, i, 2) for i in range(2)]
  s = prepare.summarize(markers)
  c = s["counts"]
  assert [f["video_uid"] for f in s["failed_videos"]] == [desc["broken_uid"]]
  assert "cannot open" in s["failed_videos"][0]["error"] and desc["broken_uid"] in s["failed_videos"][0]["error"]
  assert c["videos_failed"] == 1 and c["videos_ok"] == 2 and c["videos_missing"] == 1
  # Per video: 3 actions x 2 passes + start + end narrations = 8 clips; #unsure and empty dropped.
  assert c["clips_written"] == 16 and s["records"] == {"train": 16, "val": 0}
  assert c["dropped_unsure"] == 2 and c["dropped_empty"] == 2
  texts = {records.decode_header(r)[0]["text"] for r in _all_records(prepared)}
  assert any(re.fullmatch(r"the person moves the \w+ ball to the (left|right|up|down)", t) for t in texts)
  assert any(re.fullmatch(r"the person pushes the \w+ ball \w+wards", t) for t in texts)  # "#C C  ...wards."
  assert all("#" not in t for t in texts)
  assert "man X looks at the person" in texts


def test_rerun_skips_finished_shards_and_redoes_unfinished(corpus, prepared, tmp_path):
  root, _ = corpus
  before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(prepared, "*array_record*"))}
  source = prepare.build_source(root, None, None)
  m = prepare.prepare_shard(source, prepared, shard_index=1, num_shards=2, progress=False)
  assert m.get("skipped")
  assert before == {p: os.path.getmtime(p) for p in glob.glob(os.path.join(prepared, "*array_record*"))}
  # An interrupted shard (stale temp file, no marker) is redone from scratch.
  out = str(tmp_path / "out")
  os.makedirs(out)
  stale = os.path.join(out, records.shard_name("train", 0, 2) + ".tmp-999")
  open(stale, "wb").write(b"partial")
  prepare.prepare_shard(source, out, shard_index=1, num_shards=2, progress=False)
  with pytest.raises(ValueError, match=r"shards \[0\] of 2 are not finished"):
    records.list_shards(out, "train")
  m0 = prepare.prepare_shard(source, out, shard_index=0, num_shards=2, progress=False)
  assert not os.path.exists(stale) and not m0.get("skipped")
  assert len(records.list_shards(out, "train")) >= 1
  with pytest.raises(ValueError, match="jpeg_quality"):
    prepare.prepare_shard(source, out, shard_index=0, num_shards=2, overwrite=True, progress=False,
                          opts=prepare.PrepareOptions(jpeg_quality=50))


def test_shards_partition_the_videos(corpus, prepared):
  headers = [records.decode_header(r)[0] for r in _all_records(prepared)]
  uids_by_shard = []
  for path in records.list_shards(prepared, "train"):
    uids_by_shard.append({records.decode_header(r)[0]["video_uid"] for r in _read_shard(path)})
  assert len(uids_by_shard) == 2 and not (uids_by_shard[0] & uids_by_shard[1])
  assert len({h["clip_uid"] for h in headers}) == len(headers)


def test_manifest_source_with_workers(corpus, tmp_path):
  _, desc = corpus
  out = str(tmp_path / "m")
  assert prepare.main(["--manifest", desc["manifest"], "--out", out, "--workers", "2", "--no_progress",
                       "--size", "64", "--val_fraction", "0.5"]) == 0
  m = records.read_marker(out, 0, 1)
  assert m["counts"]["clips_written"] == 6 and m["counts"]["frames_written"] == 6 * 30
  assert sum(m["records"].values()) == 6
  header, frames = records.decode_frames(_all_records(out, split=next(s for s, n in m["records"].items() if n))[0])
  assert frames.shape[1:] == (64, 64, 3) and header["source"] == "manifest"
  assert header["text"].startswith("move the ")


def test_seeking_h264_sparse_clips_bounded_work(tmp_path):
  """Clips far apart: one seek each (keyframes every 15 frames, B-frames), decoding stops
  after the last wanted frame, and the frames are the ones the rule names."""
  path = str(tmp_path / "h264.mp4")
  make_fake.write_video(path, width=96, height=64, seconds=12, codec="libx264", seed=1, gop=15)
  specs = [clips.ClipSpec(f"c{i}", "h", path, t - 1.5, t + 1.5, "x", "x", "test") for i, t in enumerate([3.0, 9.0])]
  stats = {}
  out = list(decode.decode_clips(path, specs, size=64, stats=stats))
  assert [d.spec.clip_uid for d in out] == ["c0", "c1"]
  assert stats["seeks"] == 2 and stats["seek_fallbacks"] == 0
  # Second clip: frames 225..312; decoding from a keyframe <= 225 and stopping at 312.
  assert stats["decoded_frames"] <= (135 - 45 + 1 + 15) + (312 - 225 + 1 + 15)
  for d, t in zip(out, [3.0, 9.0]):
    assert d.frame_index == [int(round(30 * t)) - 45 + 3 * k for k in range(30)]
    codes = [make_fake.read_frame_code(records.decode_jpeg(j), 96, 64) for j in d.jpegs]
    assert codes == d.frame_index


def test_truncated_video_is_reported(tmp_path):
  path = str(tmp_path / "trunc.mp4")
  make_fake.write_video(path, width=64, height=64, seconds=4, seed=2)
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 3])
  spec = clips.ClipSpec("c", "trunc", path, 0.5, 3.5, "x", "x", "test")
  res = prepare.process_video(("trunc", path, [spec], prepare.PrepareOptions(size=32), 1))
  # Either FFmpeg refuses the file (reported) or decodes what is there (clip clamped).
  if res["error"]:
    assert "trunc" in res["error"] and res["counts"]["clips_failed"] == 1
  else:
    assert res["counts"].get("clips_written", 0) + res["counts"].get("clips_too_short", 0) == 1


def test_frame_code_strip_is_optional_and_nothing_else_changes():
  rng = np.random.default_rng(0)
  background = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
  actions = make_fake.actions_for(6.0, np.random.default_rng(1))
  index = 37
  coded = make_fake.render_frame(index, 64, 64, background, actions)
  plain = make_fake.render_frame(index, 64, 64, background, actions, frame_code=False)
  strip = make_fake.code_cell(64, 64)
  assert make_fake.read_frame_code(coded, 64, 64) == index
  np.testing.assert_array_equal(coded[strip:], plain[strip:])
  # Without the code the top rows are scene (panned background), not the grey/black/white strip.
  assert not np.isin(plain[:strip], (0, 128, 255)).all()
