"""Per-category time of one profiled train step, JAX and torch (docs/train_step_profile.md).

    python -m benchmarks.profile_breakdown DIR      (DIR = --profile_dir of train_step_vs_torch)

JAX: the perfetto trace of jax.profiler holds one event per executed XLA op (thunk),
named by its HLO instruction; the optimized HLO text (jax_hlo.txt) gives each
instruction its JAX op_name and source stack. An op is filed under
  component: the GR-1 part whose source file is on its stack (MAE, resampler, trunk,
             decoder, CLIP, image resize, losses, optimizer, embeddings/heads);
  kind:      matmul (dot / ynn fusions), GELU (erf), LayerNorm (flax normalization),
             softmax, transpose/copy (layout), RNG (dropout masks), other elementwise;
  pass:      backward when the op_name is under transpose(jvp(...)), else forward.
Op times are summed over threads, so with two cores the total can exceed the wall time;
fractions are of that sum.
torch: torch.profiler's per-operator self CPU time (torch_ops.txt / torch_trace.json),
grouped into the same kinds.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys

COMPONENTS = (("mae_vit.py", "MAE (frozen)"), ("clip_text.py", "CLIP text (frozen)"),
              ("perceiver_resampler.py", "Perceiver resampler"), ("video_decoder.py", "video decoder"),
              ("gpt2_trunk.py", "GPT-2 trunk"), ("image_preprocessing.py", "image resize + norm"),
              ("losses.py", "losses"), ("action_head.py", "action head"), ("optax", "optimizer"),
              ("attention_mask.py", "attention mask"), ("/gr1.py", "embeddings / token assembly"),
              ("train_step.py", "step (grad norm, guard)"))


def _tables(hlo: str):
  """The FileNames / FunctionNames / FileLocations / StackFrames tables of an HLO dump."""
  sections, current = collections.defaultdict(dict), None
  for line in hlo.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      current = line
      continue
    if current and re.match(r"^\d+ ", line):
      key, rest = line.split(" ", 1)
      sections[current][int(key)] = rest.strip('"')
    elif current and line.strip():
      current = None
  files, locations, frames = sections["FileNames"], {}, {}
  for key, rest in sections["FileLocations"].items():
    f = re.search(r"file_name_id=(\d+)", rest)
    locations[key] = files.get(int(f.group(1)), "") if f else ""
  for key, rest in sections["StackFrames"].items():
    loc, parent = re.search(r"file_location_id=(\d+)", rest), re.search(r"parent_frame_id=(\d+)", rest)
    # parent_frame_id is printed one higher than the parent's key (0: no parent)
    frames[key] = (locations.get(int(loc.group(1)), "") if loc else "", int(parent.group(1)) - 1 if parent else 0)
  return frames


def _stack_files(frames, frame_id):
  seen, out = set(), []
  while frame_id and frame_id not in seen and frame_id in frames:
    seen.add(frame_id)
    file, frame_id = frames[frame_id]
    out.append(file)
  return out


def jax_instructions(hlo: str):
  """instruction name -> (component, kind, pass) from the optimized HLO text."""
  frames = _tables(hlo)
  out = {}
  pattern = re.compile(r"^\s+(?:ROOT )?%([\w.-]+) = (\S+) ([\w-]+)\(.*?(?:metadata=\{(.*?)\})?(?:, backend_config|$)")
  for line in hlo.splitlines():
    m = pattern.match(line)
    if not m:
      continue
    name, shape, opcode, meta = m.group(1), m.group(2), m.group(3), m.group(4) or ""
    op_name = re.search(r'op_name="([^"]*)"', meta)
    op_name = op_name.group(1) if op_name else ""
    frame = re.search(r"stack_frame_id=(\d+)", meta)
    files = _stack_files(frames, int(frame.group(1))) if frame else []
    component = "other"
    for needle, label in COMPONENTS:
      if any(needle in f for f in files):
        component = label
        break
    prim = op_name.rsplit("/", 1)[-1]
    if name.startswith("ynn_fusion") or opcode in ("dot", "convolution") or "dot" in name or prim == "dot_general":
      kind = "matmul"
    elif any("normalization.py" in f for f in files):
      kind = "LayerNorm"
    elif "erf" in op_name or "gelu" in name:
      kind = "GELU (erf)"
    elif any(k in op_name for k in ("softmax", "reduce_max", "exp")) and "attention.py" in "".join(files):
      kind = "softmax"
    elif opcode in ("copy", "transpose") or "transpose" in name or prim == "transpose" and "jvp" not in prim:
      kind = "transpose/copy"
    elif "random" in op_name or "threefry" in op_name or "bernoulli" in op_name:
      kind = "RNG (dropout)"
    else:
      kind = "other elementwise/reduce"
    direction = "backward" if "transpose(jvp" in op_name else "forward"
    out[name] = (component, kind, direction)
  return out


def jax_breakdown(directory: str):
  with open(os.path.join(directory, "jax_hlo.txt")) as f:
    names = jax_instructions(f.read())
  trace = sorted(glob.glob(os.path.join(directory, "jax", "**", "perfetto_trace.json.gz"), recursive=True))[-1]
  events = json.load(gzip.open(trace))["traceEvents"]
  by = collections.Counter()
  for e in events:
    op = (e.get("args") or {}).get("hlo_op")
    if e.get("ph") == "X" and op:
      by[names.get(op, ("unmapped", "unmapped", "?")) + (op,)] += e["dur"] / 1e6
  return by


TORCH_KINDS = (("mm", "matmul"), ("addmm", "matmul"), ("bmm", "matmul"), ("matmul", "matmul"),
               ("linear", "matmul"), ("convolution", "matmul"), ("conv", "matmul"),
               ("gelu", "GELU (erf)"), ("layer_norm", "LayerNorm"), ("softmax", "softmax"),
               ("copy_", "transpose/copy"), ("clone", "transpose/copy"), ("contiguous", "transpose/copy"),
               ("cat", "transpose/copy"), ("bernoulli", "RNG (dropout)"), ("dropout", "RNG (dropout)"),
               ("upsample_bicubic", "image resize"), ("adam", "optimizer"), ("_foreach", "optimizer"))


def torch_kind(name: str) -> str:
  base = name.split("::")[-1].lower()
  for needle, kind in TORCH_KINDS:
    if needle == base or (len(needle) > 3 and needle in base):
      return kind
  return "other elementwise/reduce"


def torch_breakdown(directory: str):
  events = json.load(open(os.path.join(directory, "torch_trace.json")))["traceEvents"]
  # self time of aten ops: an op's duration minus that of aten ops nested in it (same thread)
  ops = [e for e in events if e.get("ph") == "X" and e.get("cat") == "cpu_op" and e["name"].startswith("aten::")]
  by_thread = collections.defaultdict(list)
  for e in ops:
    by_thread[e["tid"]].append(e)
  self_time = collections.Counter()
  for thread_ops in by_thread.values():
    thread_ops.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack = []
    for e in thread_ops:
      while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
        stack.pop()
      if stack:
        self_time[id(stack[-1])] -= e["dur"]
      self_time[id(e)] += e["dur"]
      stack.append(e)
  by = collections.Counter()
  for e in ops:
    by[(torch_kind(e["name"]), e["name"])] += self_time[id(e)] / 1e6
  return by


def table(counter, key, title):
  total = sum(counter.values())
  agg = collections.Counter()
  for k, v in counter.items():
    agg[key(k)] += v
  lines = [f"{title} (sum {total:.2f} s)"]
  for k, v in agg.most_common():
    lines.append(f"  {v:8.2f} s  {100 * v / total:5.1f} %  {k}")
  return "\n".join(lines)


def main(argv):
  directory = argv[1]
  jax = jax_breakdown(directory)
  print(table(jax, lambda k: k[0], "JAX by component"))
  print(table(jax, lambda k: k[1], "JAX by kind"))
  print("\n".join(table(jax, lambda k: f"{k[0]} / {k[1]} / {k[2]}", "JAX by component / kind / pass")
                  .split("\n")[:26]))
  print("\n".join(table(jax, lambda k: f"{k[3]} ({k[0]} / {k[1]} / {k[2]})", "JAX top ops").split("\n")[:21]))
  if os.path.exists(os.path.join(directory, "torch_trace.json")):
    t = torch_breakdown(directory)
    print(table(t, lambda k: k[0], "torch by kind (aten self time)"))
    print("\n".join(table(t, lambda k: k[1], "torch top aten ops").split("\n")[:21]))


if __name__ == "__main__":
  main(sys.argv)
