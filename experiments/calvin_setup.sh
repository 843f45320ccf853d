#!/usr/bin/env bash
# Installs CALVIN (calvin_env + calvin_models) into its own numpy<2 virtualenv, beside this
# project (which needs numpy 2). Idempotent: re-running skips what is already there.
#
#   experiments/calvin_setup.sh [SRC_DIR] [VENV_DIR]      (defaults: ./calvin_src ./calvin_venv)
#
# SRC_DIR gets git checkouts of github.com/mees/calvin and github.com/mees/calvin_env
# (calvin_env must stay a git checkout: PlayTableSimEnv asks git for its commit). Pass
# existing checkouts' parent to skip cloning. Then use VENV_DIR/bin/python as --calvin_python
# and SRC_DIR/calvin as --calvin_root. Needs python3.11 (pybullet 3.2.7 has a cp311 wheel),
# a C++ compiler (pyhash) and network access to PyPI. Nothing of CALVIN lands in this repo.
set -euo pipefail
SRC=$(realpath -m "${1:-calvin_src}")
VENV=$(realpath -m "${2:-calvin_venv}")
PY=${PYTHON:-python3.11}
mkdir -p "$SRC"

[ -d "$SRC/calvin/calvin_models" ] || git clone https://github.com/mees/calvin.git "$SRC/calvin"
[ -d "$SRC/calvin_env/.git" ] || git clone https://github.com/mees/calvin_env.git "$SRC/calvin_env"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install "numpy<2" pybullet==3.2.7 hydra-core==1.3.8 "omegaconf>=2.3,<2.4" gym==0.26.2 \
  opencv-python-headless scipy numpy-quaternion gitpython termcolor tqdm hydra-colorlog \
  pybind11 wheel
# The evaluation modules import torch and pytorch_lightning (CPU torch pinned; never bare torch).
$PIP install torch==2.13.0 pytorch-lightning "numpy<2"

# pyhash 0.9.3 (CALVIN's initial block placement): its sdist's bundled pybind11 2.3 headers do
# not compile on Python 3.11; swap in current pybind11 headers and build with setuptools 57.
if ! "$VENV/bin/python" -c "import pyhash" 2>/dev/null; then
  work=$(mktemp -d)
  "$PY" -m venv "$work/build_venv"
  "$work/build_venv/bin/python" -m pip install -q setuptools==57.5.0 wheel
  # pip saves the sdist, then fails to prepare it (fine): we only want the file.
  (cd "$work" && "$work/build_venv/bin/python" -m pip download --no-deps --no-binary :all: \
     --no-build-isolation pyhash==0.9.3 -d . >/dev/null 2>&1 || true)
  tar -xzf "$work"/pyhash-0.9.3.tar.gz -C "$work"
  inc=$("$VENV/bin/python" -c 'import pybind11; print(pybind11.get_include())')
  rm -rf "$work/pyhash-0.9.3/src/pybind11/include" && cp -r "$inc" "$work/pyhash-0.9.3/src/pybind11/include"
  (cd "$work/pyhash-0.9.3" && "$work/build_venv/bin/python" setup.py -q bdist_wheel)
  $PIP install --no-deps "$work"/pyhash-0.9.3/dist/pyhash-*.whl
  rm -rf "$work"
fi

# CALVIN's own packages, from the checkouts (--no-deps: their pins, hydra 1.1 / torch 1.13, do
# not run on Python 3.11; the versions above do).
$PIP install --no-deps -e "$SRC/calvin_env" -e "$SRC/calvin/calvin_models"

"$VENV/bin/python" - <<'EOF'
import numpy, pybullet, hydra, pyhash, calvin_env, calvin_agent.evaluation.multistep_sequences  # noqa
print(f"CALVIN venv ok: numpy {numpy.__version__}, hydra {hydra.__version__}")
EOF
echo "use: --calvin_python $VENV/bin/python --calvin_root $SRC/calvin"
