"""The README's code blocks run as written.

A Python block preceded by `<!-- readme-test: NAME -->` is executed here; the only thing
substituted is the checkpoint location (the quick start's /tmp/gr1_demo/finetune), which
points at a tiny checkpoint made for the test, so the block's names, imports and shapes
are checked exactly as a reader copies them.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO_CHECKPOINT = "/tmp/gr1_demo/finetune"


def readme_blocks() -> dict[str, str]:
  text = README.read_text()
  return dict(re.findall(r"<!-- readme-test: (\S+) -->\s*```python\n(.*?)```", text, flags=re.S))


def test_marked_blocks_exist():
  assert set(readme_blocks()) == {"forward"}


def test_forward_block_runs_as_written(tmp_path):
  from flax import nnx

  from gr1_jax.model_checkpoint import numpy_params, save_model_checkpoint
  from gr1_jax.modules.gr1 import GR1
  from tests.conftest import tiny_config
  cfg = tiny_config()   # every input group on: both cameras, state, [ACT] and [OBS] queries
  checkpoint = tmp_path / "finetune"
  save_model_checkpoint(str(checkpoint), numpy_params(GR1(cfg, rngs=nnx.Rngs(0))), cfg)
  code = readme_blocks()["forward"]
  assert code.count(DEMO_CHECKPOINT) == 1
  script = tmp_path / "forward.py"
  script.write_text(code.replace(DEMO_CHECKPOINT, str(checkpoint)))
  result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                            "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)})
  assert result.returncode == 0, result.stderr[-3000:]
  patches = (cfg.mae.image_size // cfg.mae.patch_size) ** 2
  want = (f"(1, {cfg.seq_len}, {cfg.action_chunk}, 6) (1, {cfg.seq_len}, {cfg.action_chunk}) "
          f"(1, {cfg.seq_len}, {patches}, {cfg.mae.patch_size ** 2 * 3})")
  assert result.stdout.strip().splitlines()[-1] == want


@pytest.mark.parametrize("path", ["requirements.txt", "requirements-torch.txt"])
def test_requirement_comments_point_at_existing_readme_sections(path):
  headings = {h.strip().lower() for h in re.findall(r"^#+ (.+)$", README.read_text(), flags=re.M)}
  for quoted in re.findall(r'README "([^"]+)"', (ROOT / path).read_text()):
    assert quoted.lower() in headings, f"{path} points at README section {quoted!r}"
