"""CALVIN's long-horizon evaluation protocol, independent of where the simulator comes from.

The official protocol (CALVIN calvin_agent/evaluation/evaluate_policy.py, as used by
GR-1's evaluate_calvin.py; gr1.md section 7):
  for every chain (initial condition, 5 tasks) from CALVIN's get_sequences(1000):
    env.reset(robot_obs, scene_obs) of the chain's initial condition
    for every task of the chain:
      obs = env.get_obs(); start_info = env.get_info(); policy.reset()
      up to 360 times: action = policy.step(obs, instruction); obs, _, _, info = env.step(action)
                       success as soon as the task oracle says so (start_info vs info)
      the chain stops at the first failed task (the env is NOT reset between tasks)
  success rate at i = fraction of chains with >= i successes; average length = mean successes.

A backend supplies CALVIN's parts (gr1_jax.evaluation.calvin_backend.CalvinBackend, or
a fake in tests): sequences(n), initial_state(condition) -> (robot_obs, scene_obs),
instructions() -> {task: text}, make_env() -> env with reset/step/get_obs/get_info,
task_success(start_info, current_info, task) -> bool, close(). A policy factory builds
the agent (reset(), step(obs, goal) -> 7-D action) in each worker process.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from gr1_jax.atomic_files import write_json

EP_LEN = 360
NUM_SEQUENCES = 1000
CHAIN_LENGTH = 5


@dataclasses.dataclass
class SubtaskResult:
  task: str
  instruction: str
  success: bool
  steps: int
  policy_seconds: float
  env_seconds: float


@dataclasses.dataclass
class ChainResult:
  index: int
  tasks: tuple[str, ...]
  initial_condition: Any
  subtasks: list[SubtaskResult]
  seconds: float

  @property
  def num_success(self) -> int:
    return sum(s.success for s in self.subtasks)

  def to_json(self) -> dict:
    return {"index": self.index, "tasks": list(self.tasks), "num_success": self.num_success,
            "initial_condition": _jsonable(self.initial_condition), "seconds": round(self.seconds, 3),
            "subtasks": [dataclasses.asdict(s) for s in self.subtasks]}

  @classmethod
  def from_json(cls, record: dict) -> "ChainResult":
    return cls(index=record["index"], tasks=tuple(record["tasks"]),
               initial_condition=record["initial_condition"], seconds=record["seconds"],
               subtasks=[SubtaskResult(**s) for s in record["subtasks"]])


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


def _as_env_action(action) -> np.ndarray:
  """Like GR-1's CalvinEnvWrapperRaw.step: 7 values, gripper forced to +1 if > 0 else -1."""
  action = np.array(action, dtype=np.float32).reshape(-1)
  if action.shape != (7,):
    raise ValueError(f"policy.step returned {action.shape[0]} values, expected a 7-D action "
                     "(6 relative arm values + gripper)")
  action[-1] = 1.0 if action[-1] > 0 else -1.0
  return action


def rollout_subtask(env, policy, backend, task: str, instruction: str, *, ep_len: int = EP_LEN,
                    frames: list | None = None) -> SubtaskResult:
  """One subtask from the env's current state; appends rgb_static frames to `frames` if given."""
  obs = env.get_obs()
  policy.reset()
  start_info = env.get_info()
  if frames is not None:
    frames.append(np.asarray(obs["rgb_obs"]["rgb_static"]))
  policy_s = env_s = 0.0
  for step in range(ep_len):
    t0 = time.perf_counter()
    action = _as_env_action(policy.step(obs, instruction))
    t1 = time.perf_counter()
    obs, _, _, current_info = env.step(action)
    t2 = time.perf_counter()
    policy_s, env_s = policy_s + (t1 - t0), env_s + (t2 - t1)
    if frames is not None:
      frames.append(np.asarray(obs["rgb_obs"]["rgb_static"]))
    if backend.task_success(start_info, current_info, task):
      return SubtaskResult(task, instruction, True, step + 1, policy_s, env_s)
  return SubtaskResult(task, instruction, False, ep_len, policy_s, env_s)


def evaluate_chain(env, policy, backend, index: int, condition, tasks: Sequence[str],
                   instructions: dict, *, ep_len: int = EP_LEN,
                   video_dir: str | None = None, video_fps: float = 30.0) -> ChainResult:
  start = time.perf_counter()
  robot_obs, scene_obs = backend.initial_state(condition)
  env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
  results = []
  for i, task in enumerate(tasks):
    if task not in instructions:
      raise KeyError(f"task {task!r} has no instruction in the validation annotations "
                     f"({len(instructions)} tasks known)")
    frames = [] if video_dir else None
    result = rollout_subtask(env, policy, backend, task, instructions[task], ep_len=ep_len, frames=frames)
    results.append(result)
    if video_dir:
      from gr1_jax.visualization import save_animation
      tag = "succ" if result.success else "fail"
      save_animation(os.path.join(video_dir, f"{index:04d}-{i}-{task}-{tag}.mp4"), frames, fps=video_fps)
    if not result.success:
      break
  return ChainResult(index, tuple(tasks), condition, results, time.perf_counter() - start)


def count_success(num_successes: Sequence[int]) -> list[float]:
  """Success rate for 1..5 tasks in a row (CALVIN's count_success)."""
  counts = np.asarray(num_successes)
  if counts.size == 0:
    return [0.0] * CHAIN_LENGTH
  return [float(np.mean(counts >= i)) for i in range(1, CHAIN_LENGTH + 1)]


def progress_identity(metadata: dict | None) -> dict:
  """What makes two runs the same evaluation, for resuming: the metadata less the backend's
  description (versions and paths of the simulator, which may be reinstalled in between)."""
  return {k: v for k, v in (metadata or {}).items() if k != "backend"}


def summarize(results: Sequence[ChainResult]) -> dict:
  """CALVIN's print_and_save numbers (chain_sr, avg_seq_len, task_info) plus timings."""
  results = sorted(results, key=lambda r: r.index)
  successes = [r.num_success for r in results]
  task_success, task_total = collections.Counter(), collections.Counter()
  for r in results:
    for s in r.subtasks:                  # attempted tasks: the successes and the first failure
      task_total[s.task] += 1
      task_success[s.task] += int(s.success)
  steps = sum(s.steps for r in results for s in r.subtasks)
  policy_s = sum(s.policy_seconds for r in results for s in r.subtasks)
  env_s = sum(s.env_seconds for r in results for s in r.subtasks)
  return {
      "num_sequences": len(results),
      "avg_seq_len": float(np.mean(successes)) if successes else 0.0,
      "chain_sr": {str(i + 1): sr for i, sr in enumerate(count_success(successes))},
      "task_info": {t: {"success": task_success[t], "total": task_total[t],
                        "success_rate": task_success[t] / task_total[t]}
                    for t in sorted(task_total)},
      "timing": {"env_steps": steps,
                 "policy_step_ms": 1000 * policy_s / steps if steps else None,
                 "env_step_ms": 1000 * env_s / steps if steps else None,
                 "chain_seconds_mean": float(np.mean([r.seconds for r in results])) if results else None},
  }


def format_summary(summary: dict) -> str:
  lines = [f"{summary['num_sequences']} chains, average length {summary['avg_seq_len']:.3f}",
           " ".join(f"{k}/5: {100 * v:.1f}%" for k, v in summary["chain_sr"].items())]
  for task, info in summary["task_info"].items():
    lines.append(f"  {task}: {info['success']} / {info['total']} ({100 * info['success_rate']:.1f}%)")
  return "\n".join(lines + format_timing(summary["timing"]))


def format_timing(timing: dict) -> list[str]:
  """The per-step timing line of a summary (none when no step ran)."""
  if not timing["env_steps"]:
    return []
  return [f"  {timing['env_steps']} env steps: policy {timing['policy_step_ms']:.1f} ms/step, "
          f"env {timing['env_step_ms']:.1f} ms/step"]


# ----------------------------------------------------------------------------- running many chains
@dataclasses.dataclass
class EvalJob:
  """Everything a worker needs (picklable): the backend, the policy factory, the chains."""
  backend: Any
  policy_factory: Callable[[], Any]
  chains: list[tuple[int, Any, tuple[str, ...]]]
  instructions: dict
  ep_len: int = EP_LEN
  video_dir: str | None = None
  progress_path: str | None = None
  verbose: bool = True


def run_job(job: EvalJob) -> list[ChainResult]:
  """Runs job.chains in this process with one env and one policy."""
  env = job.backend.make_env()
  policy = job.policy_factory()
  results = []
  try:
    for index, condition, tasks in job.chains:
      result = evaluate_chain(env, policy, job.backend, index, condition, tasks, job.instructions,
                              ep_len=job.ep_len, video_dir=job.video_dir)
      results.append(result)
      if job.progress_path:
        with open(job.progress_path, "a") as f:
          f.write(json.dumps(result.to_json()) + "\n")
      if job.verbose and len(tasks) == 1:    # an episode of the per-task protocol (calvin_tasks)
        done = sum(r.num_success for r in results)
        print(f"[pid {os.getpid()}] episode {index}: {tasks[0]} "
              f"{'succeeded' if result.num_success else 'failed'} after {result.subtasks[0].steps} steps "
              f"in {result.seconds:.1f}s | this worker: {done}/{len(results)} succeeded, "
              f"{len(job.chains) - len(results)} to go", flush=True)
      elif job.verbose:
        rates = count_success([r.num_success for r in results])
        print(f"[pid {os.getpid()}] chain {index}: {result.num_success}/{len(tasks)} "
              f"({' -> '.join(tasks[:result.num_success + 1])}) in {result.seconds:.1f}s | running "
              + " ".join(f"{i + 1}/5 {100 * r:.1f}%" for i, r in enumerate(rates)), flush=True)
  finally:
    job.backend.close()
  return results


def split_chains(chains: Sequence, workers: int) -> list[list]:
  """Contiguous, near-equal slices (every chain in exactly one slice, order kept)."""
  bounds = np.linspace(0, len(chains), workers + 1).round().astype(int)
  return [list(chains[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def run_chains(backend, policy_factory, chains: Sequence[tuple[Any, Sequence[str]]], instructions: dict,
               *, workers: int = 1, ep_len: int = EP_LEN, video_dir: str | None = None,
               progress_dir: str | None = None, identity: dict | None = None,
               verbose: bool = True) -> list[ChainResult]:
  """Evaluates (condition, tasks) chains over `workers` processes (spawned; 1 = this process).

  progress_dir: every finished chain is appended there as a JSON line, and a re-run of the
  same evaluation (the same `identity`, e.g. checkpoint and step, chains, instructions and
  budget) skips the chains found there: an interrupted evaluation resumes. Another
  evaluation's progress is refused, never mixed in."""
  indexed = [(i, cond, tuple(tasks)) for i, (cond, tasks) in enumerate(chains)]
  if video_dir:
    os.makedirs(video_dir, exist_ok=True)
  done, progress_name = {}, None
  if progress_dir:
    fingerprint = {"identity": _jsonable(identity or {}), "ep_len": ep_len, "instructions": instructions,
                   "chains": [[i, _jsonable(cond), list(tasks)] for i, cond, tasks in indexed]}
    done, progress_name = load_progress(progress_dir, fingerprint)
    if done and verbose:
      print(f"resuming: {len(done)} of {len(indexed)} chains/episodes done before ({progress_dir})",
            flush=True)
  todo = [chain for chain in indexed if chain[0] not in done]
  slices = split_chains(todo, max(1, min(workers, len(todo))))
  jobs = [EvalJob(backend, policy_factory, part, instructions, ep_len, video_dir,
                  os.path.join(progress_dir, progress_name.format(worker=w)) if progress_dir else None,
                  verbose)
          for w, part in enumerate(slices)]
  if len(jobs) <= 1:
    results = run_job(jobs[0]) if jobs else []
  else:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
      results = [r for part in pool.map(run_job, jobs) for r in part]
  return sorted(list(done.values()) + results, key=lambda r: r.index)


class ProgressMismatchError(ValueError):
  """A progress directory holds another evaluation's chains."""


def load_progress(progress_dir: str, fingerprint: dict) -> tuple[dict[int, ChainResult], str]:
  """({index: result} of the chains an earlier run of this evaluation finished, the file-name
  pattern for this run's workers). The first run writes the fingerprint to
  progress_dir/evaluation.json; later runs must match it. A line cut short by a kill is
  skipped (its chain runs again); each run appends to new files, so no line is ever joined
  to a cut one."""
  os.makedirs(progress_dir, exist_ok=True)
  meta = os.path.join(progress_dir, "evaluation.json")
  files = sorted(f for f in os.listdir(progress_dir) if f.endswith(".jsonl"))
  if os.path.exists(meta):
    with open(meta) as f:
      stored = json.load(f)
    if stored != json.loads(json.dumps(fingerprint)):
      differ = sorted(k for k in fingerprint if stored.get(k) != json.loads(json.dumps(fingerprint[k])))
      raise ProgressMismatchError(
          f"{progress_dir} holds the progress of another evaluation (its {', '.join(differ)} differ); "
          f"delete it to start afresh, or write this one elsewhere (--output)")
  elif files:
    raise ProgressMismatchError(f"{progress_dir} holds progress files but no evaluation.json to tell which "
                                f"evaluation they belong to; delete it to start afresh")
  else:
    write_json(meta, fingerprint)
  done = {}
  for name in files:
    with open(os.path.join(progress_dir, name)) as f:
      for line in f:
        try:
          result = ChainResult.from_json(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError):
          continue
        done[result.index] = result
  return done, f"progress.run{len(files)}.worker{{worker}}.jsonl" if files else "progress.worker{worker}.jsonl"


def evaluate(backend, policy_factory, *, num_sequences: int = NUM_SEQUENCES,
             sequence_pool: int | None = None, workers: int = 1,
             ep_len: int = EP_LEN, video_dir: str | None = None, output: str | None = None,
             progress_dir: str | None = None, metadata: dict | None = None,
             verbose: bool = True) -> dict:
  """The whole protocol: chains from backend.sequences, run, summarise, write `output` JSON.

  sequence_pool: generate this many chains (CALVIN's official list is get_sequences(1000))
  and evaluate the first num_sequences of them; None = generate exactly num_sequences
  (note CALVIN's get_sequences(n) for n < 1000 is NOT a prefix of the official list).
  """
  start = time.perf_counter()
  pool = num_sequences if sequence_pool is None else sequence_pool
  if pool < num_sequences:
    raise ValueError(f"sequence_pool={pool} is smaller than num_sequences={num_sequences}")
  chains = list(backend.sequences(pool))[:num_sequences]
  if len(chains) != num_sequences:
    print(f"warning: the backend gave {len(chains)} chains for num_sequences={num_sequences}",
          file=sys.stderr)
  instructions = backend.instructions()
  results = run_chains(backend, policy_factory, chains, instructions, workers=workers, ep_len=ep_len,
                       video_dir=video_dir, progress_dir=progress_dir, identity=progress_identity(metadata),
                       verbose=verbose)
  summary = summarize(results)
  summary["timing"]["total_seconds"] = time.perf_counter() - start
  summary.update({"ep_len": ep_len, "workers": workers, "sequence_pool": pool, **(metadata or {}),
                  "chains": [r.to_json() for r in results]})
  if output:
    write_json(output, summary)
  return summary
