"""Narration cleaning and the clip/frame rule (no video needed)."""
import json
from collections import Counter

import pytest

from data_pipelines.ego4d import clips, records
from data_pipelines.ego4d.text import clean_manifest_text, clean_narration


@pytest.mark.parametrize("raw, expected", [
    ("#C C picks a bag of clothes from the floor", "the person picks a bag of clothes from the floor"),
    ("#c  c\topens the door .", "the person opens the door"),
    ("#O man X gives C a cup", "man X gives the person a cup"),
    ("#C C holds C's phone", "the person holds the person's phone"),
    ("#C C reads a C++ book , then sits", "the person reads a C++ book, then sits"),
    ("#Summary C cooks", "the person cooks"),
    ("cuts\u00a0the\nonion", "cuts the onion"),
])
def test_clean_narration_default(raw, expected):
  assert clean_narration(raw) == (expected, "ok")


@pytest.mark.parametrize("raw, reason", [
    ("#C C picks #unsure from the table", "unsure"),
    ("#C C picks #Unsure", "unsure"),
    ("", "empty"),
    ("   \n ", "empty"),
    ("#C C", "empty"),
    ("#O .", "empty"),
    (None, "empty"),
])
def test_clean_narration_rejects(raw, reason):
  assert clean_narration(raw) == (None, reason)


def test_clean_narration_options():
  assert clean_narration("#C C picks #unsure from the table", unsure="strip") == (
      "the person picks from the table", "ok")
  assert clean_narration("#C C picks a cup", camera_wearer="") == ("picks a cup", "ok")
  with pytest.raises(ValueError, match="unsure"):
    clean_narration("x", unsure="keep")
  assert clean_manifest_text("  pick  up\tthe block ") == ("pick up the block", "ok")
  assert clean_manifest_text(" ") == (None, "empty")


def test_frame_rule_30fps_is_stride_3():
  # t = 5.0 s: tau_k = 3.5 + k / 10, i_k = round(30 t) - 45 + 3k = 105 + 3k.
  assert clips.frame_indices(3.5, 6.5, fps=30, sample_fps=10) == [105 + 3 * k for k in range(30)]
  # Clamped at the start: t = 0.3 -> tau from -1.2, only tau >= 0 kept (frames 0, 3, ..., 51).
  assert clips.frame_indices(-1.2, 1.8, fps=30, sample_fps=10) == list(range(0, 54, 3))
  # Clamped at the end of a 360-frame video.
  assert clips.frame_indices(10.3, 13.3, fps=30, sample_fps=10, num_frames=360) == list(range(309, 360, 3))
  # Other frame rates use the nearest frame.
  assert clips.frame_indices(0.0, 0.5, fps=25, sample_fps=10) == [0, 3, 5, 8, 10]


def test_split_is_per_video_and_deterministic():
  uids = [f"uid{i}" for i in range(2000)]
  val = [u for u in uids if clips.split_of(u, 0.1) == "val"]
  assert 120 < len(val) < 280
  assert val == [u for u in uids if clips.split_of(u, 0.1) == "val"]
  assert all(clips.split_of(u, 0.0) == "train" for u in uids)


def test_narration_clips_schema(tmp_path):
  root = tmp_path / "ego4d"
  (root / "v1" / "full_scale").mkdir(parents=True)
  (root / "v1" / "full_scale" / "vid_a.mp4").write_bytes(b"x")
  narr = {
      "vid_a": {"narration_pass_1": {"narrations": [
          {"timestamp_sec": 4.0, "narration_text": "#C C opens the fridge", "annotation_uid": "a1"},
          {"timestamp_sec": 2.0, "narration_text": "#C C picks #unsure", "annotation_uid": "a2"},
          {"timestamp_sec": None, "narration_text": "#C C walks", "annotation_uid": "a3"}],
          "summaries": []},
          "narration_pass_2": {"narrations": [
              {"timestamp_sec": 1.0, "narration_text": "#O woman Y waves at C"}], "summaries": []}},
      "vid_missing": {"narration_pass_1": {"narrations": [
          {"timestamp_sec": 1.0, "narration_text": "#C C sits"}]}},
  }
  path = tmp_path / "narration.json"
  path.write_text(json.dumps(narr))
  counts = Counter()
  out = clips.narration_clips(clips.load_narrations(str(path)), str(root), counts=counts)
  assert list(out) == ["vid_a"]
  got = [(c.clip_uid, c.start_sec, c.end_sec, c.text, c.source) for c in out["vid_a"]]
  assert got == [("vid_a:narration_pass_2:0", -0.5, 2.5, "woman Y waves at the person", "ego4d/narration_pass_2"),
                 ("a1", 2.5, 5.5, "the person opens the fridge", "ego4d/narration_pass_1")]
  assert counts["dropped_unsure"] == 1 and counts["dropped_no_timestamp"] == 1
  assert counts["videos_missing"] == 1 and counts["clips_of_missing_videos"] == 1
  only1 = clips.narration_clips(clips.load_narrations(str(path)), str(root), passes=["narration_pass_1"])
  assert [c.clip_uid for c in only1["vid_a"]] == ["a1"]


def test_manifest_csv_and_errors(tmp_path):
  (tmp_path / "v.mp4").write_bytes(b"x")
  (tmp_path / "m.csv").write_text("video,start,end,text\nv.mp4,1.0,2.5, open  the drawer \nv.mp4,0,1,\n")
  counts = Counter()
  out = clips.manifest_clips(str(tmp_path / "m.csv"), counts=counts)
  (specs,) = out.values()
  assert [(s.start_sec, s.end_sec, s.text, s.video_uid) for s in specs] == [(1.0, 2.5, "open the drawer", "v")]
  assert counts["dropped_empty"] == 1
  (tmp_path / "bad.jsonl").write_text('{"video": "v.mp4", "start": 2, "text": "x"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl row 1: missing field 'end'"):
    clips.manifest_clips(str(tmp_path / "bad.jsonl"))


def test_record_roundtrip_and_bad_magic():
  rec = records.encode_record({"clip_uid": "c", "height": 2, "width": 2}, [b"ab", b"cde"])
  header, offset = records.decode_header(rec)
  assert header["jpeg_size"] == [2, 3]
  assert [rec[a:b] for a, b in records.jpeg_slices(header, offset)] == [b"ab", b"cde"]
  with pytest.raises(ValueError, match="not a clip record"):
    records.decode_header(b"garbage-bytes")
