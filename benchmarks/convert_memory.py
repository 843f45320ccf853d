"""Peak memory of `experiments.convert from-official` on a full-size official checkpoint, and a strict reload.

    python benchmarks/convert_memory.py [--workdir DIR] [--keep]

1. Builds a synthetic official-layout GR-1 state_dict at the official sizes with the
   torch reference (tests/torch_reference; random values): policy + MAE ViT-B/16 +
   the whole CLIP ViT-B/32 (text tower from the reference, vision tower with the
   official shapes), float32, with GPT-2's attn.bias/masked_bias buffers as
   transformers 4.5.1 saved them; written as {'state_dict': ...} (~1.1 GB).
2. Runs the conversion in a subprocess and reports its peak RSS (the child's VmHWM;
   RssAnon/RssFile maxima sampled from /proc; getrusage's ru_maxrss is not used because
   Linux carries the parent's high-water mark into it across fork+exec) against the file size,
   next to the RSS of a subprocess that only imports the same stack. Target: < 3x.
3. Exports the converted directory back with `to-torch` (once plain, once with
   --clip pointing at the source file so the vision tower is re-attached) and loads
   each export with strict=True into the torch reference laid out like the official
   class (the second one with a CLIP vision tower attached), checking every tensor is
   bit-identical to the source.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Runs a module as __main__ and prints the child's own peak RSS (kB) as the last stdout line.
_RUNNER = """
import runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
  if sys.argv[0] != "--import-only":
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
  else:
    import jax, flax, orbax.checkpoint, torch, numpy, ml_collections
    from gr1_jax.conversion import convert, official_state
    from gr1_jax.modules import gr1
except SystemExit as exc:
  code = exc.code or 0
# VmHWM, not ru_maxrss: Linux carries the parent's RSS high-water mark across fork+exec into ru_maxrss.
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print("PEAK_RSS_KB", hwm, flush=True)
sys.exit(code)
"""


def _proc_kb(pid: int, field: str) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return 0


def run_measured(args: list[str]) -> dict:
  """A child python process; returns its peak RSS (VmHWM) and the sampled RssAnon/RssFile maxima."""
  start = time.time()
  proc = subprocess.Popen([sys.executable, "-c", _RUNNER, *args], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  peaks = {"RssAnon": 0, "RssFile": 0}
  done = threading.Event()

  def sample():
    while not done.is_set():
      for field in peaks:
        peaks[field] = max(peaks[field], _proc_kb(proc.pid, field))
      time.sleep(0.05)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  out, err = proc.communicate()
  done.set()
  sampler.join()
  match = re.search(r"PEAK_RSS_KB (\d+)", out)
  if proc.returncode != 0 or not match:
    raise RuntimeError(f"child {' '.join(args[:2])} failed (rc {proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
  return {"peak_rss": int(match.group(1)) * 1024, "rss_anon": peaks["RssAnon"] * 1024,
          "rss_file": peaks["RssFile"] * 1024, "seconds": time.time() - start,
          "stdout": out.replace(match.group(0), "").strip()}


def clip_visual_shapes(width=768, layers=12, patch=32, positions=50, embed=512) -> dict[str, tuple]:
  """OpenAI CLIP ViT-B/32 vision tower (gr1.md §6.2), key -> shape."""
  shapes = {"class_embedding": (width,), "positional_embedding": (positions, width), "proj": (width, embed),
            "conv1.weight": (width, 3, patch, patch), "ln_pre.weight": (width,), "ln_pre.bias": (width,),
            "ln_post.weight": (width,), "ln_post.bias": (width,)}
  for i in range(layers):
    p = f"transformer.resblocks.{i}."
    shapes.update({p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                   p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                   p + "ln_1.weight": (width,), p + "ln_1.bias": (width,), p + "ln_2.weight": (width,),
                   p + "ln_2.bias": (width,), p + "mlp.c_fc.weight": (4 * width, width),
                   p + "mlp.c_fc.bias": (4 * width,), p + "mlp.c_proj.weight": (width, 4 * width),
                   p + "mlp.c_proj.bias": (width,)})
  return shapes


def attach_params(root, shapes: dict[str, tuple]):
  """Adds nn.Parameters named by dotted keys below `root` (creating plain sub-modules)."""
  import torch
  for key, shape in shapes.items():
    *path, leaf = key.split(".")
    module = root
    for name in path:
      if not hasattr(module, name):
        module.add_module(name, torch.nn.Module())
      module = getattr(module, name)
    module.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape), requires_grad=False))


def official_like_reference(with_visual: bool):
  """The torch reference at official sizes with the GPT-2 buffers, optionally holding CLIP's vision tower."""
  from tests.torch_reference import GR1Reference, RefConfig
  model = GR1Reference(RefConfig(), gpt2_buffers=True)
  if with_visual:
    model.model_clip.add_module("visual", __import__("torch").nn.Module())
    attach_params(model.model_clip.visual, clip_visual_shapes())
  return model


def build_source(path: str) -> tuple[int, int]:
  import torch

  from tests.torch_reference import random_init_
  model = random_init_(official_like_reference(with_visual=False), seed=0)
  state = dict(model.state_dict())
  del model
  g = torch.Generator().manual_seed(1)
  for key, shape in clip_visual_shapes().items():
    state[f"model_clip.visual.{key}"] = 0.02 * torch.randn(shape, generator=g)
  n = sum(v.numel() for v in state.values() if v.is_floating_point())
  torch.save({"state_dict": state}, path)
  return n, len(state)


def verify(source: str, exported: str, with_visual: bool) -> str:
  import torch
  src = torch.load(source, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
  back = torch.load(exported, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
  model = official_like_reference(with_visual)
  result = model.load_state_dict(back, strict=True)      # raises on any missing/unexpected/mis-shaped key
  expected = {k for k in src if with_visual or not k.startswith("model_clip.visual.")}
  if "model_clip.logit_scale" not in src:
    expected.add("model_clip.logit_scale")
  assert set(back) == expected, sorted(set(back) ^ expected)[:10]
  differing = [k for k in src if k in back and (src[k].dtype != back[k].dtype or not torch.equal(src[k], back[k]))]
  assert not differing, differing[:10]
  del model
  return f"strict load OK ({result}); {len(back)} tensors, all bit-identical to the source"


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default=None, help="where to write the ~1.1 GB file (default: a temp dir)")
  parser.add_argument("--keep", action="store_true", help="keep the files")
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix="gr1_convert_mem-", dir=args.workdir)
  try:
    source = os.path.join(work, "snapshot_synthetic.pt")
    t = time.time()
    n_values, n_keys = build_source(source)
    size = os.path.getsize(source)
    print(f"source: {source}: {n_keys} tensors, {n_values:,} float32 values, {size / 1e9:.3f} GB "
          f"(built in {time.time() - t:.0f} s)")

    base = run_measured(["--import-only"])
    print(f"baseline (imports only): peak RSS {base['peak_rss'] / 1e9:.3f} GB")

    ckpt = os.path.join(work, "converted")
    conv = run_measured(["experiments.convert", "from-official", f"--policy={source}", f"--out={ckpt}"])
    print(conv["stdout"])
    print(f"from-official: peak RSS {conv['peak_rss'] / 1e9:.3f} GB = {conv['peak_rss'] / size:.2f} x file size "
          f"(sampled max RssAnon {conv['rss_anon'] / 1e9:.3f} GB, RssFile {conv['rss_file'] / 1e9:.3f} GB; "
          f"{(conv['peak_rss'] - base['peak_rss']) / 1e9:.3f} GB above the import baseline), {conv['seconds']:.0f} s; "
          f"target < 3x: {'PASS' if conv['peak_rss'] < 3 * size else 'FAIL'}")

    for with_visual in (False, True):
      out = os.path.join(work, "export_with_visual.pt" if with_visual else "export.pt")
      extra = [f"--clip={source}"] if with_visual else []
      exp = run_measured(["experiments.convert", "to-torch", f"--checkpoint={ckpt}", f"--out={out}", *extra])
      print(f"to-torch{' --clip' if with_visual else ''}: peak RSS {exp['peak_rss'] / 1e9:.3f} GB, "
            f"{exp['seconds']:.0f} s, {os.path.getsize(out) / 1e9:.3f} GB written")
      print(f"  {'reference + CLIP vision tower' if with_visual else 'reference'}: "
            f"{verify(source, out, with_visual)}")
      os.remove(out)
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)
    else:
      print(f"kept {work}")


if __name__ == "__main__":
  main()
