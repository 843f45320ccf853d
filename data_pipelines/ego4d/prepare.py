r"""Sharded clip preparation: Ego4D videos + narrations (or a manifest) -> ArrayRecord shards.

    python -m data_pipelines.ego4d.prepare --ego4d_root ROOT --out OUT \
        [--num_shards N --shard_index i] [--workers W]
    python -m data_pipelines.ego4d.prepare --manifest clips.jsonl --out OUT ...

Any cluster scheduler can fan out the N shard jobs (array jobs, one process per
shard); each job writes its own files and never touches another's:
    OUT/ego4d_clips-{train,val}.array_record-<i>-of-<N>   one record per clip (records.py)
    OUT/_done/shard-<i>-of-<N>.json                       marker + statistics, written last
Videos are assigned to shards by position in the sorted uid list (i, i+N, ...).  Data
files are written under a temporary name and renamed when complete, then the marker is
written (tmp + rename), so a shard is either finished (marker present) or redone from
scratch; re-running a finished shard is a no-op.  `--shard_index -1` runs every
unfinished shard in this process.  Videos that fail to open/decode are logged with
their uid and listed/counted in the marker and the summary.  The split (train/val)
is chosen per video (hash of the uid, --val_fraction) so no video straddles splits.

The same decoding (decode.py) also runs under Apache Beam through the TFDS builder
in tfds_builder.py; this script needs neither Beam nor TensorFlow.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from data_pipelines.ego4d import clips as clips_lib
from data_pipelines.ego4d import decode as decode_lib
from data_pipelines.ego4d import records
from data_pipelines.ego4d import text as text_lib

log = logging.getLogger("ego4d.prepare")

CLIPS_PER_TASK = 64      # a long video is cut in chunks of this many clips (bounded memory)


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  size: int = decode_lib.DEFAULT_SIZE
  sample_fps: float = clips_lib.SAMPLE_FPS
  clip_seconds: float = clips_lib.CLIP_SECONDS
  jpeg_quality: int = decode_lib.DEFAULT_JPEG_QUALITY
  min_frames: int = 4
  passes: tuple[str, ...] = clips_lib.NARRATION_PASSES
  unsure: str = "drop"
  camera_wearer: str = text_lib.DEFAULT_CAMERA_WEARER
  val_fraction: float = 0.0
  seek_gap_sec: float = decode_lib.DEFAULT_SEEK_GAP_SEC

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["passes"] = list(self.passes)
    return d


def clip_header(dc: decode_lib.DecodedClip, sample_fps: float) -> dict:
  s = dc.spec
  return {"clip_uid": s.clip_uid, "video_uid": s.video_uid, "source": s.source, "text": s.text,
          "raw_text": s.raw_text, "start_sec": s.start_sec, "end_sec": s.end_sec,
          "timestamp_sec": s.timestamp_sec, "fps": dc.fps, "sample_fps": sample_fps,
          "frame_index": dc.frame_index, "frame_time": [round(t, 6) for t in dc.frame_time],
          "height": dc.size, "width": dc.size}


def process_video(task: tuple[str, list[clips_lib.ClipSpec], PrepareOptions, int]) -> dict:
  """Cuts the clips of one video (chunk); returns records and counts, never raises for
  a bad video (the error is returned)."""
  key, video_path, specs, opts, threads = task
  stats: dict = {}
  out: list[bytes] = []
  counts = Counter()
  error = None
  try:
    for dc in decode_lib.decode_clips(video_path, specs, size=opts.size, sample_fps=opts.sample_fps,
                                      jpeg_quality=opts.jpeg_quality, seek_gap_sec=opts.seek_gap_sec,
                                      threads=threads, stats=stats):
      if len(dc.frame_index) < opts.min_frames:
        counts["clips_too_short"] += 1
        continue
      out.append(records.encode_record(clip_header(dc, opts.sample_fps), dc.jpegs))
      counts["clips_written"] += 1
      counts["frames_written"] += len(dc.jpegs)
  except decode_lib.VideoDecodeError as e:
    error = str(e)
    counts["clips_failed"] += len(specs) - counts["clips_written"] - counts["clips_too_short"]
  counts["decoded_frames"] += stats.get("decoded_frames", 0)
  counts["seeks"] += stats.get("seeks", 0)
  counts["seek_fallbacks"] += stats.get("seek_fallbacks", 0)
  return {"key": key, "video_uid": specs[0].video_uid, "video_path": video_path, "records": out,
          "counts": dict(counts), "error": error}


def list_clips(args_source: dict, opts: PrepareOptions, counts: Counter,
               keys: Sequence[str] | None = None) -> dict[str, list[clips_lib.ClipSpec]]:
  if args_source.get("manifest"):
    return clips_lib.manifest_clips(args_source["manifest"], counts=counts, video_keys=keys)
  return clips_lib.narration_clips(args_source["narrations"], args_source["ego4d_root"],
                                   passes=opts.passes, clip_seconds=opts.clip_seconds, unsure=opts.unsure,
                                   camera_wearer=opts.camera_wearer, video_uids=keys, counts=counts)


def _tasks(by_video: dict[str, list[clips_lib.ClipSpec]], opts: PrepareOptions,
           threads: int) -> Iterator[tuple]:
  for key in sorted(by_video):
    specs = by_video[key]
    for i in range(0, len(specs), CLIPS_PER_TASK):
      yield (key, specs[0].video_path, specs[i:i + CLIPS_PER_TASK], opts, threads)


def _progress(total: int, desc: str):
  try:
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="video", file=sys.stderr, dynamic_ncols=True)
  except ImportError:  # pragma: no cover
    return None


def _check_options(out_dir: str, opts: PrepareOptions, num_shards: int) -> None:
  for path in glob.glob(os.path.join(out_dir, records.DONE_DIR, "shard-*.json")):
    with open(path, encoding="utf-8") as f:
      marker = json.load(f)
    if marker.get("num_shards") != num_shards:
      raise ValueError(f"{path} belongs to a run with --num_shards {marker.get('num_shards')}, "
                       f"not {num_shards}; use another --out")
    theirs = marker.get("options", {})
    for key, value in opts.to_json().items():
      if theirs.get(key) != value:
        raise ValueError(f"{path} was prepared with {key}={theirs.get(key)!r}, this run has {value!r}; "
                         "use the same options or another --out")


def prepare_shard(source: dict, out_dir: str, *, shard_index: int, num_shards: int,
                  opts: PrepareOptions = PrepareOptions(), workers: int = 0, threads: int = 0,
                  overwrite: bool = False, progress: bool = True) -> dict:
  """Prepares one shard; returns its marker (statistics). No-op if already finished.

  `source` is {"ego4d_root": ..., "narrations": <parsed narration.json>} or
  {"manifest": path}.
  """
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index {shard_index} outside [0, {num_shards})")
  os.makedirs(out_dir, exist_ok=True)
  existing = records.read_marker(out_dir, shard_index, num_shards)
  if existing is not None and not overwrite:
    log.info("shard %d of %d already finished (%s); skipping", shard_index, num_shards,
             records.marker_path(out_dir, shard_index, num_shards))
    return dict(existing, skipped=True)
  _check_options(out_dir, opts, num_shards)
  t0 = time.time()
  if source.get("manifest"):
    all_keys = clips_lib.manifest_video_keys(source["manifest"])
  else:
    all_keys = sorted(source["narrations"])
  keys = all_keys[shard_index::num_shards]
  counts = Counter()
  by_video = list_clips(source, opts, counts, keys)
  counts["videos"] = len(by_video)

  final = {split: os.path.join(out_dir, records.shard_name(split, shard_index, num_shards))
           for split in records.SPLITS}
  for path in final.values():
    for stale in glob.glob(f"{path}.tmp-*"):
      os.remove(stale)
  tmp = {split: f"{path}.tmp-{os.getpid()}" for split, path in final.items()}
  from array_record.python import array_record_module
  writers = {split: array_record_module.ArrayRecordWriter(tmp[split], "group_size:1")
             for split in records.SPLITS}
  n_records = Counter()
  n_bytes = Counter()
  failed = []
  split_of_video = {key: clips_lib.split_of(specs[0].video_uid, opts.val_fraction)
                    for key, specs in by_video.items()}
  bar = _progress(len(by_video), f"shard {shard_index}/{num_shards}") if progress else None
  pool = None
  try:
    tasks = _tasks(by_video, opts, threads)
    if workers > 1:
      pool = multiprocessing.get_context("spawn").Pool(workers)
      results = pool.imap(process_video, tasks, chunksize=1)
    else:
      results = map(process_video, tasks)
    last_uid_done = None
    failed_uids = set()
    for res in results:
      uid = res["video_uid"]
      split = split_of_video[res["key"]]
      for rec in res["records"]:
        writers[split].write(rec)
        n_records[split] += 1
        n_bytes[split] += len(rec)
      counts.update(res["counts"])
      if res["error"] and uid not in failed_uids:
        failed_uids.add(uid)
        log.warning("video %s failed: %s", uid, res["error"])
        failed.append({"video_uid": uid, "path": res["video_path"], "error": res["error"]})
      if uid != last_uid_done:
        last_uid_done = uid
        if bar is not None:
          bar.update(1)
          bar.set_postfix(clips=counts["clips_written"], frames=counts["frames_written"],
                          failed=len(failed), refresh=False)
  finally:
    if pool is not None:
      pool.close()
      pool.join()
    if bar is not None:
      bar.close()
    for w in writers.values():
      w.close()
  for split in records.SPLITS:
    os.replace(tmp[split], final[split])
  counts["videos_failed"] = len(failed)
  counts["videos_ok"] = counts["videos"] - len(failed)
  seconds = time.time() - t0
  marker = {"shard_index": shard_index, "num_shards": num_shards, "options": opts.to_json(),
            "records": {s: n_records[s] for s in records.SPLITS},
            "bytes": {s: n_bytes[s] for s in records.SPLITS}, "counts": dict(sorted(counts.items())),
            "failed_videos": failed, "seconds": round(seconds, 3),
            "files": {s: os.path.basename(p) for s, p in final.items()}}
  records.write_json_atomic(records.marker_path(out_dir, shard_index, num_shards), marker)
  return marker


def summarize(markers: Sequence[dict]) -> dict:
  counts = Counter()
  out = {"shards": len(markers), "records": Counter(), "bytes": Counter(), "failed_videos": [], "seconds": 0.0}
  for m in markers:
    counts.update(m["counts"])
    out["records"].update(m["records"])
    out["bytes"].update(m["bytes"])
    out["failed_videos"] += m["failed_videos"]
    out["seconds"] += m["seconds"]
  out["counts"] = dict(sorted(counts.items()))
  out["records"] = dict(out["records"])
  out["bytes"] = dict(out["bytes"])
  return out


def format_summary(s: dict, title: str) -> str:
  c = Counter(s["counts"])
  total_bytes = sum(s["bytes"].values())
  frames = c["frames_written"]
  lines = [
      f"{title}:",
      f"  videos   {c['videos']} with clips: {c['videos_ok']} ok, {c['videos_failed']} failed; "
      f"{c['videos_missing']} listed but missing on disk, {c['videos_without_narrations']} without usable narrations",
      f"  clips    {c['clips_written']} written ({', '.join(f'{k} {v}' for k, v in s['records'].items())}); "
      f"skipped: {c['clips_too_short']} too short, {c['clips_failed']} in failed videos, "
      f"{c['clips_of_missing_videos']} of missing videos",
      f"  texts    {c['narrations']} narrations; dropped {c['dropped_unsure']} #unsure, "
      f"{c['dropped_empty']} empty, {c['dropped_no_timestamp']} without timestamp",
      f"  frames   {frames} written ({total_bytes / max(frames, 1) / 1024:.1f} KiB/frame), "
      f"{c['decoded_frames']} decoded, {c['seeks']} seeks ({c['seek_fallbacks']} fallbacks)",
      f"  bytes    {total_bytes} ({total_bytes / 2**20:.1f} MiB)",
      f"  seconds  {s['seconds']:.1f} ({c['decoded_frames'] / max(s['seconds'], 1e-9):.0f} decoded frames/s, "
      f"{c['clips_written'] / max(s['seconds'], 1e-9):.1f} clips/s)",
  ]
  for f in s["failed_videos"]:
    lines.append(f"  FAILED   {f['video_uid']}: {f['error']}")
  return "\n".join(lines)


def build_source(ego4d_root: str | None, manifest: str | None, narration_json: str | None) -> dict:
  if bool(ego4d_root) == bool(manifest):
    raise ValueError("pass exactly one of --ego4d_root or --manifest")
  if manifest:
    if not os.path.isfile(manifest):
      raise FileNotFoundError(f"--manifest {manifest!r} does not exist")
    return {"manifest": manifest}
  path = narration_json or clips_lib.find_narration_json(ego4d_root)
  return {"ego4d_root": ego4d_root, "narrations": clips_lib.load_narrations(path)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--ego4d_root", help="Ego4D download root (holds v2/ and/or v1/)")
  p.add_argument("--narration_json", help="default: <root>/v2|v1/annotations/narration.json")
  p.add_argument("--manifest", help="generic CSV/JSONL manifest: video, start, end, text")
  p.add_argument("--out", required=True)
  p.add_argument("--num_shards", type=int, default=1)
  p.add_argument("--shard_index", type=int, default=-1, help="-1: all unfinished shards, in this process")
  p.add_argument("--workers", type=int, default=0, help="decoding processes (0/1: in process)")
  p.add_argument("--threads", type=int, default=0, help="FFmpeg decoder threads per process (0: auto)")
  p.add_argument("--size", type=int, default=decode_lib.DEFAULT_SIZE)
  p.add_argument("--sample_fps", type=float, default=clips_lib.SAMPLE_FPS)
  p.add_argument("--clip_seconds", type=float, default=clips_lib.CLIP_SECONDS)
  p.add_argument("--jpeg_quality", type=int, default=decode_lib.DEFAULT_JPEG_QUALITY)
  p.add_argument("--min_frames", type=int, default=4)
  p.add_argument("--passes", default=",".join(clips_lib.NARRATION_PASSES))
  p.add_argument("--unsure", choices=text_lib.UNSURE_POLICIES, default="drop")
  p.add_argument("--camera_wearer", default=text_lib.DEFAULT_CAMERA_WEARER)
  p.add_argument("--val_fraction", type=float, default=0.0)
  p.add_argument("--overwrite", action="store_true", help="redo finished shards")
  p.add_argument("--no_progress", action="store_true")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  source = build_source(args.ego4d_root, args.manifest, args.narration_json)
  opts = PrepareOptions(size=args.size, sample_fps=args.sample_fps, clip_seconds=args.clip_seconds,
                        jpeg_quality=args.jpeg_quality, min_frames=args.min_frames,
                        passes=tuple(x for x in args.passes.split(",") if x), unsure=args.unsure,
                        camera_wearer=args.camera_wearer, val_fraction=args.val_fraction)
  shards = range(args.num_shards) if args.shard_index < 0 else [args.shard_index]
  ran = []
  for i in shards:
    marker = prepare_shard(source, args.out, shard_index=i, num_shards=args.num_shards, opts=opts,
                           workers=args.workers, threads=args.threads, overwrite=args.overwrite,
                           progress=not args.no_progress)
    if not marker.get("skipped"):
      ran.append(marker)
  if ran and len(ran) < args.num_shards:
    print(format_summary(summarize(ran), f"this run ({len(ran)} shard(s))"))
  elif not ran:
    print(f"nothing to do: shard(s) {list(shards)} already finished in {args.out}")
  done = [records.read_marker(args.out, i, args.num_shards) for i in range(args.num_shards)]
  if all(m is not None for m in done):
    print(format_summary(summarize(done), f"dataset {args.out} (all {args.num_shards} shards)"))
  else:
    print(f"{sum(m is not None for m in done)} of {args.num_shards} shards finished")
  return 0


if __name__ == "__main__":
  with contextlib.suppress(BrokenPipeError):
    sys.exit(main())
