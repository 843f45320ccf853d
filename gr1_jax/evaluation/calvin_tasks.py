"""Per-task CALVIN evaluation: each task alone, from CALVIN's initial states that allow it.

CALVIN's chains (calvin_rollout.evaluate) mix 34 tasks and stop at the first failure, so a
policy trained on a few tasks scores near zero there whatever it can do. This protocol asks
the narrower question, task by task, with the same parts as the official loop (CALVIN's
initial states, its 360-step budget, its task oracle, the validation instruction):

  pool  = the distinct initial conditions of CALVIN's get_sequences(200) (the 192 of the
          official get_sequences(1000))
  for every task: draw episodes_per_task conditions of the pool that CALVIN's
          multistep_sequences.valid_task accepts for it (without replacement while the pool
          lasts), seeded by (seed, task)
  every episode is a one-task chain: reset to the condition, policy.reset(), up to ep_len
          steps, success as soon as the oracle says so (calvin_rollout.evaluate_chain).

Episodes are ordered episode-major (episode 0 of every task, then episode 1, ...), so a
partial run or a worker's contiguous slice covers every task.
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Sequence

import numpy as np

from gr1_jax.atomic_files import write_json
from gr1_jax.evaluation import calvin_rollout

POOL_SEQUENCES = 200


def initial_conditions(backend, num_sequences: int = POOL_SEQUENCES) -> list[dict]:
  """The distinct initial conditions of backend.sequences(num_sequences), in first-seen order."""
  pool = []
  for condition, _ in backend.sequences(num_sequences):
    if dict(condition) not in pool:
      pool.append(dict(condition))
  return pool


def task_episodes(backend, tasks: Sequence[str], episodes_per_task: int, *, seed: int = 0,
                  pool: list[dict] | None = None) -> list[tuple[dict, tuple[str]]]:
  """(condition, (task,)) pairs, episode-major; raises ValueError for a task no condition allows."""
  pool = initial_conditions(backend) if pool is None else pool
  drawn = {}
  for task in tasks:
    valid = [c for c, ok in zip(pool, backend.valid_conditions(pool, task)) if ok]
    if not valid:
      raise ValueError(f"no CALVIN initial condition allows task {task!r}")
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    order = []
    while len(order) < episodes_per_task:   # a permutation of the pool, again if it runs out
      order.extend(rng.permutation(len(valid)).tolist())
    drawn[task] = [valid[i] for i in order[:episodes_per_task]]
  return [(drawn[task][i], (task,)) for i in range(episodes_per_task) for task in tasks]


def summarize_tasks(results: Sequence[calvin_rollout.ChainResult], groups: dict | None = None) -> dict:
  """Per-task success rates, their mean over tasks and over each named group of tasks."""
  base = calvin_rollout.summarize(results)
  rates = {t: info["success_rate"] for t, info in base["task_info"].items()}
  summary = {"num_episodes": len(results), "task_info": base["task_info"],
             "mean_task_success": float(np.mean(list(rates.values()))) if rates else 0.0,
             "timing": base["timing"]}
  for name, members in (groups or {}).items():
    present = [rates[t] for t in members if t in rates]
    if present:
      summary[f"mean_success_{name}"] = float(np.mean(present))
  return summary


def format_task_summary(summary: dict) -> str:
  lines = [f"{summary['num_episodes']} episodes, mean task success "
           f"{100 * summary['mean_task_success']:.1f}%"]
  lines += [f"  {key[len('mean_success_'):]}: {100 * value:.1f}%"
            for key, value in summary.items() if key.startswith("mean_success_")]
  for task, info in summary["task_info"].items():
    lines.append(f"  {task}: {info['success']} / {info['total']} ({100 * info['success_rate']:.1f}%)")
  return "\n".join(lines + calvin_rollout.format_timing(summary["timing"]))


def evaluate_tasks(backend, policy_factory, tasks: Sequence[str], *, episodes_per_task: int = 20,
                   seed: int = 0, workers: int = 1, ep_len: int = calvin_rollout.EP_LEN,
                   groups: dict | None = None, instructions: dict | None = None,
                   video_dir: str | None = None,
                   output: str | None = None, progress_dir: str | None = None,
                   metadata: dict | None = None, verbose: bool = True) -> dict:
  """Runs every task's episodes over `workers` processes; writes and returns the summary.

  instructions: {task: text}; default backend.instructions() (CALVIN's validation strings)."""
  start = time.perf_counter()
  episodes = task_episodes(backend, tasks, episodes_per_task, seed=seed)
  instructions = backend.instructions() if instructions is None else instructions
  results = calvin_rollout.run_chains(backend, policy_factory, episodes, instructions,
                                      workers=workers, ep_len=ep_len, video_dir=video_dir,
                                      progress_dir=progress_dir, verbose=verbose,
                                      identity=calvin_rollout.progress_identity(metadata))
  summary = summarize_tasks(results, groups)
  summary["timing"]["total_seconds"] = time.perf_counter() - start
  summary.update({"protocol": "tasks", "episodes_per_task": episodes_per_task, "seed": seed,
                  "ep_len": ep_len, "workers": workers, **(metadata or {}),
                  "episodes": [r.to_json() for r in results]})
  if output:
    write_json(output, summary)
  return summary
