"""Records scripted CALVIN (scene D) demonstrations as a dataset in CALVIN's own layout.

    python -m data_pipelines.calvin.record_demos --out /data/scripted_D \\
        --calvin_python /path/calvin_venv/bin/python --calvin_root /path/calvin \\
        [--tasks fixtures|blocks|all|task,task,...] [--per_task 40] [--workers 1] \\
        [--val_fraction 0.1] [--perturb 0.05] [--max_steps 240] [--seed 0] [--overwrite] \\
        [--train_instructions training|validation]

CALVIN's env runs in CALVIN's interpreter (`gr1_jax/evaluation/calvin_service.py`, numpy<2)
and plays the waypoint scripts of `scripted_tasks.py`. Starts are CALVIN's evaluation initial
states (the unique initial conditions of get_sequences(200), the same 192 as in the official
get_sequences(1000), that allow the task, turned into
robot/scene states by get_env_state_for_initial_condition: the robot's neutral pose), and for
3 of 4 demos the TCP moved by up to --perturb metres (IK). A demo is kept only if CALVIN's
task oracle (new_playtable_tasks.yaml) reports its task solved; rejects are counted.

Resumable: every attempt (task, index) has a seed derived from (--seed, task, index) and
leaves one file, written atomically, in OUT.work/: demos/<task>/<index>.npz (accepted) or
rejects/<task>/<index>.json. Re-running the same command skips attempts already made; a larger
--per_task extends. When every task has --per_task demos (or --assemble_only), the first
--per_task demos of each task by index are assembled into OUT (through a temp dir renamed at
the end):

    OUT/{training,validation}/episode_XXXXXXX.npz   one file per frame, CALVIN's keys
    OUT/{training,validation}/ep_start_end_ids.npy, ep_lens.npy, scene_info.npy
    OUT/{training,validation}/lang_annotations/auto_lang_ann.npy
    OUT/{training,validation}/statistics.yaml, .hydra/merged_config.yaml

Each demo is one episode (ep_start_end_ids row) and one language window covering all its
frames; training instructions are drawn from CALVIN's conf/annotations/new_playtable.yaml,
validation ones from new_playtable_validation.yaml (--train_instructions validation labels
training/ with those too: `--assemble_only` builds such a copy from OUT.work without recording
again). Validation holds about --val_fraction of
each task's demos (a hash of task and index decides). Frame ids of validation continue after
training. Not produced (not rendered / not computable here): the tactile camera (rgb_tactile
and depth_tactile are zeros of the real shapes) and the MiniLM language embeddings
(auto_lang_ann.npy has no ['language']['emb']; no validation/lang_annotations/embeddings.npy).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from data_pipelines import atomic_dir
from data_pipelines.calvin import make_fake, scripted_tasks
from gr1_jax.user_errors import UserError

SCENE = "calvin_scene_D"
# get_sequences(n) spreads n chains over CALVIN's 192 initial conditions, so any n >= 192 yields
# every condition (the same set as the official 1000), at a fraction of the time.
NUM_SEQUENCES = 200
TACTILE = {"rgb_tactile": ((160, 120, 6), np.uint8), "depth_tactile": ((160, 120, 2), np.float32)}
SETTINGS = ("seed", "perturb", "max_steps", "jitter")


class RecorderError(UserError):
  """A problem the command reports in one line."""


# ----------------------------------------------------------------------------- attempts
def attempt_rng(seed: int, task: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(task.encode()), index])


def is_validation(task: str, index: int, fraction: float) -> bool:
  return zlib.crc32(f"{task}/{index}".encode()) / 2**32 < fraction


def _atomic_write(path: Path, write) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


class Work:
  """OUT.work/: settings, CALVIN's config and annotations, one file per attempt."""

  def __init__(self, root: Path):
    self.root = Path(root)

  def demo(self, task, index):
    return self.root / "demos" / task / f"{index:06d}.npz"

  def reject(self, task, index):
    return self.root / "rejects" / task / f"{index:06d}.json"

  def done(self, task) -> tuple[list[int], list[int]]:
    """(accepted indices, rejected indices) of task, sorted; removes temp files of killed writes."""
    out = []
    for kind, ext in (("demos", ".npz"), ("rejects", ".json")):
      folder = self.root / kind / task
      found = []
      if folder.is_dir():
        for p in folder.iterdir():
          if p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
          elif p.name.endswith(ext):
            found.append(int(p.name[:-len(ext)]))
      out.append(sorted(found))
    return out[0], out[1]

  @property
  def meta_path(self):
    return self.root / "meta.json"

  def load_meta(self):
    return json.loads(self.meta_path.read_text()) if self.meta_path.is_file() else None

  def save_meta(self, meta):
    _atomic_write(self.meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def run_attempt(backend, work: Work, meta: dict, task: str, index: int) -> dict:
  """Plays attempt (task, index) and writes its file; returns a summary."""
  rng = attempt_rng(meta["seed"], task, index)
  conditions = meta["conditions"][task]
  condition = meta["condition_pool"][conditions[int(rng.integers(len(conditions)))]]
  offset = rng.uniform(-meta["perturb"], meta["perturb"], 3) if index % 4 else np.zeros(3)
  demo_seed = int(rng.integers(2**31))
  robot_obs, scene_obs = backend.initial_state(condition)
  start = time.time()
  result = backend.scripted_demo(task, demo_seed, robot_obs, scene_obs, tcp_offset=offset.tolist(),
                                 max_steps=meta["max_steps"], jitter=meta["jitter"])
  info = {"task": task, "index": index, "seed": demo_seed, "condition": condition,
          "tcp_offset": offset.tolist(), "steps": int(result["steps"]),
          "success": bool(result["success"]), "seconds": round(time.time() - start, 2)}
  if result["success"]:
    frames = result["frames"]
    _atomic_write(work.demo(task, index), lambda tmp: _save_npz(
        tmp, meta=np.array(json.dumps(info)), **frames))
  else:
    _atomic_write(work.reject(task, index), lambda tmp: Path(tmp).write_text(json.dumps(info)))
  return info


def _save_npz(path, **arrays):
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays)


# ----------------------------------------------------------------------------- workers
_WORKER = {}


def _init_worker(backend, work_root, meta):
  _WORKER.update(backend=backend, work=Work(work_root), meta=meta)


def _worker_attempt(task, index):
  return run_attempt(_WORKER["backend"], _WORKER["work"], _WORKER["meta"], task, index)


# ----------------------------------------------------------------------------- preparation
def _check_backend(backend) -> None:
  missing = backend.missing() if hasattr(backend, "missing") else []
  if missing:
    where = getattr(backend, "calvin_python", None) or sys.executable
    raise RecorderError(
        f"CALVIN is not usable from {where}: missing {', '.join(missing)}; install it with "
        f"experiments/calvin_setup.sh SRC_DIR VENV_DIR and pass --calvin_python VENV_DIR/bin/python "
        f"--calvin_root SRC_DIR/calvin (docs/evaluation.md, 'Installing CALVIN')")


def prepare(backend, work: Work, tasks, settings: dict, log=print) -> dict:
  """Writes (or checks) OUT.work/meta.json: settings, condition pool, annotations, env config."""
  meta = work.load_meta()
  if meta is not None:
    changed = {k: (meta[k], settings[k]) for k in SETTINGS if meta[k] != settings[k]}
    if changed:
      raise RecorderError(f"{work.root} was recorded with other settings {changed} (old, new); "
                          f"use another --out or the old settings")
    new = [t for t in tasks if t not in meta["conditions"]]
    if not new:
      return meta
  else:
    merged = work.root / "validation" / ".hydra" / "merged_config.yaml"
    config = backend.env_config_yaml(SCENE)
    _atomic_write(merged, lambda tmp: Path(tmp).write_text(config))
    log(f"CALVIN's initial conditions: get_sequences({NUM_SEQUENCES}) (takes a minute or more)")
    from gr1_jax.evaluation.calvin_tasks import initial_conditions  # numpy only
    pool = initial_conditions(backend, NUM_SEQUENCES)
    meta = dict(settings, condition_pool=pool, conditions={},
                annotations={"training": backend.annotations("training"),
                             "validation": backend.annotations("validation")})
    new = list(tasks)
  for task in new:
    if task not in meta["annotations"]["training"]:
      raise RecorderError(f"task {task!r} is not in CALVIN's annotations")
    valid = backend.valid_conditions(meta["condition_pool"], task)
    meta["conditions"][task] = [i for i, ok in enumerate(valid) if ok]
    if not meta["conditions"][task]:
      raise RecorderError(f"no CALVIN initial condition allows task {task!r}")
  work.save_meta(meta)
  return meta


# ----------------------------------------------------------------------------- recording
def record(backend, work_root, tasks, per_task: int, *, workers: int = 1, seed: int = 0,
           perturb: float = 0.05, max_steps: int = 240, jitter: float = 0.005,
           max_attempts: int | None = None, restart=None, max_restarts: int = 5, log=print) -> dict:
  """Makes attempts until every task has per_task accepted demos (or max_attempts attempts).

  workers <= 1 plays in this process (one CALVIN service); more use a process pool, each
  worker with its own service. Returns {task: {"accepted": n, "rejected": n, "attempts": n}}.
  restart: with workers <= 1, a function returning a fresh backend; when the CALVIN service
  dies mid-attempt (a native crash), the attempt is replayed on a new one (attempts are
  seeded and written only once complete, so nothing is lost or duplicated), at most
  max_restarts times in a row.
  """
  work = Work(work_root)
  _check_backend(backend)
  meta = prepare(backend, work, tasks, dict(seed=seed, perturb=perturb, max_steps=max_steps,
                                             jitter=jitter), log)
  max_attempts = max_attempts or 3 * per_task + 10
  state = {}
  for task in tasks:
    accepted, rejected = work.done(task)
    state[task] = {"accepted": len(accepted), "rejected": len(rejected), "inflight": 0,
                   "tried": set(accepted) | set(rejected), "next": 0}
  counts = {"done": 0}
  t0 = time.time()

  def next_jobs():  # round robin over tasks, so a stopped run has some demos of every task
    more = True
    while more:
      more = False
      for task in tasks:
        s = state[task]
        if (s["accepted"] + s["inflight"] < per_task
            and s["accepted"] + s["rejected"] + s["inflight"] < max_attempts):
          while s["next"] in s["tried"]:
            s["next"] += 1
          s["tried"].add(s["next"])
          s["inflight"] += 1
          more = True
          yield task, s["next"]

  def finish(info):
    s = state[info["task"]]
    s["inflight"] -= 1
    s["accepted" if info["success"] else "rejected"] += 1
    counts["done"] += 1
    rate = counts["done"] / max(time.time() - t0, 1e-9) * 3600
    log(f"{info['task']} #{info['index']}: {'accepted' if info['success'] else 'REJECTED'} after "
        f"{info['steps']} steps ({info['seconds']} s); {s['accepted']}/{per_task} accepted, "
        f"{s['rejected']} rejected; {rate:.0f} attempts/h")

  if workers <= 1:
    from gr1_jax.evaluation.calvin_backend import CalvinServiceDied  # stdlib + numpy only
    original = backend
    try:
      while True:
        jobs = list(next_jobs())
        if not jobs:
          break
        for task, index in jobs:
          for crashes in range(max_restarts + 1):
            try:
              info = run_attempt(backend, work, meta, task, index)
              break
            except CalvinServiceDied as exc:
              if restart is None or crashes == max_restarts:
                raise
              log(f"{task} #{index}: {str(exc).splitlines()[0]}; restarting it and replaying the attempt")
              if hasattr(backend, "close"):
                backend.close()
              backend = restart()
          finish(info)
    finally:
      if backend is not original and hasattr(backend, "close"):
        backend.close()   # a replacement started here; the caller closes its own
  else:
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                initializer=_init_worker,
                                initargs=(backend, str(work.root), meta)) as pool:
      pending = set()
      while True:
        for task, index in next_jobs():
          pending.add(pool.submit(_worker_attempt, task, index))
        if not pending:
          break
        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in done:
          finish(future.result())
  return {t: {"accepted": s["accepted"], "rejected": s["rejected"],
              "attempts": s["accepted"] + s["rejected"]} for t, s in state.items()}


# ----------------------------------------------------------------------------- assembly
def _load_demo(path: Path) -> tuple[dict, dict]:
  with np.load(path, allow_pickle=False) as npz:
    frames = {k: npz[k] for k in npz.files if k != "meta"}
    info = json.loads(str(npz["meta"]))
  return frames, info


def _write_split(folder: Path, demos, first_frame: int, instructions: dict, rng, merged_config: str):
  (folder / "lang_annotations").mkdir(parents=True)
  (folder / ".hydra").mkdir()
  frame_id = first_frame
  ids, lens, anns, tasks, windows = [], [], [], [], []
  robot, scene, actions = [], [], []
  for path, task in demos:
    frames, _ = _load_demo(path)
    n = len(frames["rel_actions"])
    for t in range(n):
      np.savez_compressed(
          folder / f"episode_{frame_id + t:07d}.npz",
          actions=frames["actions"][t], rel_actions=frames["rel_actions"][t],
          robot_obs=frames["robot_obs"][t], scene_obs=frames["scene_obs"][t],
          rgb_static=frames["rgb_static"][t], rgb_gripper=frames["rgb_gripper"][t],
          rgb_tactile=np.zeros(*TACTILE["rgb_tactile"]),
          depth_static=frames["depth_static"][t], depth_gripper=frames["depth_gripper"][t],
          depth_tactile=np.zeros(*TACTILE["depth_tactile"]))
    ids.append((frame_id, frame_id + n - 1))
    lens.append(n)
    windows.append((frame_id, frame_id + n - 1))
    tasks.append(task)
    options = instructions[task]
    anns.append(options[int(rng.integers(len(options)))])
    robot.append(frames["robot_obs"]), scene.append(frames["scene_obs"]), actions.append(frames["actions"])
    frame_id += n
  np.save(folder / "ep_start_end_ids.npy", np.array(ids, np.int64))
  np.save(folder / "ep_lens.npy", np.array(lens, np.int64))
  np.save(folder / "scene_info.npy", {SCENE: [first_frame, frame_id - 1]}, allow_pickle=True)
  np.save(folder / "lang_annotations" / "auto_lang_ann.npy",
          {"language": {"ann": anns, "task": tasks}, "info": {"episodes": [], "indx": windows}},
          allow_pickle=True)
  make_fake.write_statistics(folder / "statistics.yaml", np.concatenate(robot),
                             np.concatenate(scene), np.concatenate(actions))
  (folder / ".hydra" / "merged_config.yaml").write_text(merged_config)
  return frame_id


def assemble(work_root, out, tasks, per_task: int, *, val_fraction: float = 0.1,
             overwrite: bool = False, allow_short: bool = False,
             train_instructions: str = "training") -> dict:
  """Writes the dataset OUT from the first per_task accepted demos of each task.

  train_instructions: which of CALVIN's strings label training/: "training" (one of
  new_playtable.yaml's paraphrases per demo, as in CALVIN's data) or "validation"
  (new_playtable_validation.yaml, the strings CALVIN's evaluation gives: the control for a
  text encoder that does not carry over to unseen paraphrases)."""
  if train_instructions not in ("training", "validation"):
    raise RecorderError(f"train_instructions must be training or validation, got {train_instructions!r}")
  work, out = Work(work_root), Path(out)
  meta = work.load_meta()
  if meta is None:
    raise RecorderError(f"{work.root}: nothing recorded yet")
  chosen = {}
  for task in tasks:
    accepted = work.done(task)[0][:per_task]
    if len(accepted) < per_task and not allow_short:
      raise RecorderError(f"task {task}: {len(accepted)} of {per_task} demos recorded; record more "
                          f"or pass --assemble_only to assemble what there is")
    chosen[task] = accepted
  if out.exists() and not overwrite:
    raise RecorderError(f"{out} exists; pass --overwrite to replace it")
  splits = {"training": [], "validation": []}
  for index in range(max((max(v, default=-1) for v in chosen.values()), default=-1) + 1):
    for task in tasks:  # index-major: tasks interleave along the frame stream
      if index in chosen[task]:
        split = "validation" if is_validation(task, index, val_fraction) else "training"
        splits[split].append((work.demo(task, index), task))
  if not splits["training"]:
    raise RecorderError("no demo for training/")
  config = (work.root / "validation" / ".hydra" / "merged_config.yaml").read_text()
  summary = {}
  with atomic_dir.building(out) as tmp:
    first = 0
    for split, demos in splits.items():
      if not demos:
        continue
      rng = np.random.default_rng([meta["seed"], len(split)])
      strings = meta["annotations"][train_instructions if split == "training" else split]
      end = _write_split(tmp / split, demos, first, strings, rng, config)
      summary[split] = {"episodes": len(demos), "frames": end - first}
      first = end
  return summary


# ----------------------------------------------------------------------------- command line
def resolve_tasks(spec: str) -> list[str]:
  groups = {"fixtures": list(scripted_tasks.FIXTURE_TASKS), "blocks": list(scripted_tasks.BLOCK_TASKS),
            "all": list(scripted_tasks.TASKS)}
  tasks = []
  for part in spec.split(","):
    for task in groups.get(part, [part]):
      if task not in scripted_tasks.TASKS:
        raise RecorderError(f"no script for task {task!r}; choose from fixtures, blocks, all or "
                            f"{', '.join(scripted_tasks.TASKS)}")
      if task not in tasks:
        tasks.append(task)
  return tasks


def make_backend(args, work_root: Path):
  from gr1_jax.evaluation.calvin_backend import CalvinBackend  # stdlib + numpy only
  work_root.mkdir(parents=True, exist_ok=True)
  return CalvinBackend(str(work_root), calvin_python=args.calvin_python, calvin_root=args.calvin_root,
                       log_path=str(work_root / "calvin_service.log"), with_depth=True)


def main(argv=None, backend=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="dataset directory to write (gets training/, validation/)")
  parser.add_argument("--work_dir", default=None, help="per-attempt files (default: OUT.work)")
  parser.add_argument("--calvin_python", default=None, help="python of a CALVIN install (numpy<2 venv)")
  parser.add_argument("--calvin_root", default=None, help="the calvin repository checkout (its calvin_models/conf)")
  parser.add_argument("--tasks", default="fixtures", help="fixtures, blocks, all or comma-separated task names")
  parser.add_argument("--per_task", type=int, default=40)
  parser.add_argument("--workers", type=int, default=1, help="simulator processes")
  parser.add_argument("--val_fraction", type=float, default=0.1)
  parser.add_argument("--perturb", type=float, default=0.05, help="max TCP start offset per axis (m)")
  parser.add_argument("--jitter", type=float, default=0.005, help="max waypoint offset per axis (m)")
  parser.add_argument("--max_steps", type=int, default=240)
  parser.add_argument("--max_attempts", type=int, default=None, help="per task (default 3 * per_task + 10)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--assemble_only", action="store_true", help="assemble the demos recorded so far")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
  parser.add_argument("--train_instructions", choices=("training", "validation"), default="training",
                      help="strings that label training/: CALVIN's training paraphrases (default) or "
                           "its validation strings, those its evaluation uses")
  args = parser.parse_args(argv)
  out = Path(args.out)
  work_root = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".work")
  try:
    tasks = resolve_tasks(args.tasks)
    counts = None
    if not args.assemble_only:
      restart = None if backend is not None else (lambda: make_backend(args, work_root))
      backend = backend if backend is not None else make_backend(args, work_root)
      try:
        counts = record(backend, work_root, tasks, args.per_task, workers=args.workers, seed=args.seed,
                        perturb=args.perturb, max_steps=args.max_steps, jitter=args.jitter,
                        max_attempts=args.max_attempts, restart=restart)
      finally:
        if hasattr(backend, "close"):
          backend.close()
      for task, c in counts.items():
        print(f"{task}: {c['accepted']} accepted, {c['rejected']} rejected by CALVIN's oracle")
    meta = Work(work_root).load_meta() or {}
    assembled = meta.get("assembled_to", [])
    assembled = [assembled] if isinstance(assembled, str) else assembled
    ours = str(out.resolve()) in assembled  # OUT is rebuilt from OUT.work
    summary = assemble(work_root, out, tasks, args.per_task, val_fraction=args.val_fraction,
                       overwrite=args.overwrite or ours, allow_short=True,
                       train_instructions=args.train_instructions)
    if not ours:
      assembled.append(str(out.resolve()))
    Work(work_root).save_meta(dict(Work(work_root).load_meta(), assembled_to=assembled))
    short = {t: c["accepted"] for t, c in (counts or {}).items() if c["accepted"] < args.per_task}
    if short:
      print(f"warning: fewer than {args.per_task} demos (attempts exhausted): {short}")
    for split, s in summary.items():
      print(f"{out}/{split}: {s['episodes']} episodes, {s['frames']} frames")
    return {"counts": counts, "summary": summary}
  except RecorderError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # noqa: BLE001 - a broken CALVIN install must read as one line
    from gr1_jax.evaluation.calvin_backend import CalvinServiceError
    from gr1_jax.evaluation.calvin_service import CalvinNotInstalledError
    if isinstance(e, (CalvinNotInstalledError, CalvinServiceError, FileNotFoundError)):
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      print(f"error: {first} (install CALVIN with experiments/calvin_setup.sh; "
            f"docs/evaluation.md, 'Installing CALVIN')", file=sys.stderr)
      sys.exit(2)
    raise


if __name__ == "__main__":
  main(sys.argv[1:])
