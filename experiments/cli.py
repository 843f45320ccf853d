"""What every entry point does with a user's mistake: one `error: ...` line on stderr, exit 2.

Expected errors are
  * gr1_jax.user_errors.UserError: bad config, missing or corrupt data or checkpoints
    (data_pipelines' errors, the conversion errors and ConfigError derive from it);
  * FileNotFoundError / FileExistsError: a path the user gave is missing or taken (the
    checkpoint readers below the entry points raise these, naming the path);
  * command-line mistakes: unknown flags or config keys, bad values, missing flags.
Everything else is a bug and keeps its traceback; `--debug` keeps it for expected errors too.

absl entry points (pretrain, finetune, convert) call `run_absl(main)`, argparse ones
(evaluate, evaluate_calvin, visualize) build their parser with `ArgumentParser` and call
`run(main)`.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from absl import app, flags

from gr1_jax.user_errors import UserError

EXPECTED = (UserError, FileNotFoundError, FileExistsError)

DEBUG = flags.DEFINE_bool("debug", False, "show the traceback of an expected error (bad config, data or "
                          "checkpoint) instead of the one-line report")
PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "print the resolved --config (every key with its "
                                 "value, --config.KEY=VALUE overrides applied) and exit")

_HELP = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")
_HELPFULL = ("--helpfull", "-helpfull")

# JAX logs "Unable to initialize backend 'tpu'" at INFO on every CPU-only start; under
# absl's log handler that line reads like an error. Its warnings still show.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def fail(message: str) -> NoReturn:
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(2)


def one_line(text: str) -> str:
  return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


@contextlib.contextmanager
def reporting(debug: bool):
  """Expected errors raised in the block -> `error: <message>`, exit 2 (re-raised with debug)."""
  try:
    yield
  except EXPECTED as exc:
    if debug:
      raise
    fail(str(exc) or type(exc).__name__)


class MissingPathError(UserError, FileNotFoundError):
  """A path given on the command line does not exist."""


def existing_path(flag: str, path: str, expected: str) -> str:
  """`path` unless it is a local path that does not exist; checked before anything slow starts."""
  if "://" not in path and not os.path.exists(path):
    raise MissingPathError(f"{flag} {path} does not exist; pass {expected}")
  return path


@contextlib.contextmanager
def naming(flag: str, value: str):
  """Expected errors raised in the block that do not mention `flag` get "<flag> <value>: " in
  front, so that the report says which argument to fix (library errors name only the file)."""
  try:
    yield
  except EXPECTED as exc:
    if flag not in str(exc):
      exc.args = (f"{flag} {value}: {exc}",)
    raise


# ----------------------------------------------------------------------------- argparse

class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser with --debug, whose usage errors are one `error:` line (exit 2 as before)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.add_argument("--debug", action="store_true",
                      help="show the traceback of an expected error instead of one line")

  def error(self, message):
    fail(f"{message}; see {self.prog} --help")


def run(main: Callable[[list[str]], object], argv: Sequence[str] | None = None):
  """Runs an argparse entry point's main(argv) with expected errors reported in one line."""
  argv = list(sys.argv[1:] if argv is None else argv)
  with reporting("--debug" in argv):
    return main(argv)


# ----------------------------------------------------------------------------- absl

def run_absl(main: Callable[[list[str]], object], *, required: Sequence[str] = (),
             default_config: str | None = None) -> None:
  """app.run(main) with one-line errors, --help that exits 0, --print_config and --debug.

  required: flags that must be given (except with --print_config). default_config: the
  --config used when none is given (a DEFINE_config_file default would be loaded at import)."""
  def checked_main(argv):
    if PRINT_CONFIG.value:
      if "config" not in flags.FLAGS or flags.FLAGS["config"].value is None:
        fail("--print_config needs --config FILE[:variant]")
      print(flags.FLAGS["config"].value)
      return 0
    with reporting(DEBUG.value):
      try:
        return main(argv)
      except app.UsageError as exc:
        fail(f"{exc}; see --help")

  app.run(checked_main, flags_parser=lambda argv: _parse_flags(argv, required, default_config))


def _parse_flags(argv: list[str], required: Sequence[str], default_config: str | None = None) -> list[str]:
  args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if default_config and _config_arg(args) is None:
    argv = [argv[0], f"--config={default_config}", *argv[1:]]
    args = [f"--config={default_config}", *args]
  if any(a in _HELPFULL for a in args):
    print(flags.FLAGS.get_help())
    sys.exit(0)
  if any(a in _HELP for a in args):
    print(usage())
    sys.exit(0)
  debug = "--debug" in args
  if "config" in flags.FLAGS and not debug:
    problem = _config_file_problem(args)
    if problem:
      fail(problem)
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
      flags.FLAGS["config"].value.keys()   # a config file that failed to load raises only when used
  except Exception as exc:  # noqa: BLE001 - every parsing failure is about the command line
    if debug:
      raise
    fail(_parse_error(exc, args))
  missing = [f"--{name}" for name in required if flags.FLAGS[name].value is None]
  if missing and not PRINT_CONFIG.value:
    fail(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required; see --help")
  return rest


def usage() -> str:
  """The main module's docstring, then the flags of this program (not absl's or JAX's)."""
  main = sys.modules.get("__main__")
  parts = [(getattr(main, "__doc__", None) or "").strip(), ""]
  by_module = flags.FLAGS.flags_by_module_dict()
  for module in sorted(by_module, key=lambda m: (m != sys.argv[0], m)):
    if module == sys.argv[0] or module.startswith("experiments."):
      parts.append(flags.FLAGS.module_help(module))
  if "config" in flags.FLAGS:
    parts += ["", "--config FILE[:variant] --print_config prints every key of that config with its value;",
              "set one with --config.KEY=VALUE (e.g. --config.batch_size=64 --config.data.path=/data)."]
  parts.append("--helpfull also lists the flags of absl and the libraries.")
  return "\n".join(parts)


def _parse_error(exc: Exception, args: list[str]) -> str:
  """One line for a failed flag parse, naming the flag or config key."""
  problem = _unknown_config_key(args)
  if problem:
    return problem
  lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
  # A config file that raised: absl quotes its traceback; the first and last lines say it.
  text = f"{lines[0]} {lines[-1]}" if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
  if not isinstance(exc, flags.Error) and _config_arg(args) is not None:   # raised by the config file
    text = f"--config={_config_arg(args)}: {type(exc).__name__}: {text}"
  return f"{text}; see --help"


def _config_arg(args: list[str]) -> str | None:
  for i, arg in enumerate(args):
    if arg in ("--config", "-config") and i + 1 < len(args):
      return args[i + 1]
    if arg.startswith(("--config=", "-config=")):
      return arg.split("=", 1)[1]
  return None


def _config_file_problem(args: list[str]) -> str | None:
  value = _config_arg(args)
  if value is None:
    return None
  path = value.split(":", 1)[0]
  if not os.path.isfile(path):
    return f"--config={value}: config file {path} does not exist (expected e.g. experiments/configs/pretrain.py[:variant])"
  return None


def _unknown_config_key(args: list[str]) -> str | None:
  if "config" not in flags.FLAGS:
    return None
  overrides = [a.lstrip("-").split("=", 1)[0][len("config."):] for a in args
               if a.lstrip("-").startswith("config.")]
  if not overrides:
    return None
  flag = flags.FLAGS["config"]
  source = _config_arg(args)
  try:
    config = flag.parser.parse(source) if source is not None else flag.default
    if isinstance(config, str):
      config = flag.parser.parse(config)
  except Exception:  # noqa: BLE001 - then the generic message has to do
    return None
  for path in overrides:
    message = unknown_config_key(config, path)
    if message:
      return message
  return None


def _keys(node) -> list[str] | None:
  if isinstance(node, Mapping) or hasattr(node, "keys") and hasattr(node, "__getitem__"):
    return sorted(str(k) for k in node.keys())
  return None


def unknown_config_key(config, path: str) -> str | None:
  """The report for --config.<path> if <path> is not a key of config, else None."""
  node, walked = config, []
  for part in path.split("."):
    keys = _keys(node)
    where = "config." + "".join(f"{w}." for w in walked)
    if keys is None:
      return (f"--config.{path}: {where.rstrip('.')} is a {type(node).__name__} value, it has no key "
              f"{part!r} (--print_config lists every key)")
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=3, cutoff=0.6)
      label, shown = ("closest valid keys", close) if close else ("valid keys", keys)
      return (f"--config.{path}: unknown config key {where}{part}; {label}: "
              f"{', '.join(where + k for k in shown)} (--print_config lists every key with its value)")
    node = node[part]
    walked.append(part)
  return None
