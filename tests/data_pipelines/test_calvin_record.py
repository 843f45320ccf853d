"""The scripted-demonstration recorder against a fake CALVIN: layout, round trip, rejects, resume."""
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.calvin import builder, pipeline, raw, record_demos, scripted_tasks
from tests.evaluation.fake_calvin import FakeRecordingCalvin

TASKS = ["open_drawer", "turn_on_led", "move_slider_right"]
STEPS = {"open_drawer": 3, "turn_on_led": 2, "move_slider_right": 2}


def _record(tmp_path, backend, per_task=4, **kwargs):
  work = tmp_path / "out.work"
  counts = record_demos.record(backend, work, TASKS, per_task, log=lambda *a: None, **kwargs)
  return work, counts


def test_round_trip_through_raw_reader_and_converter(tmp_path):
  work, counts = _record(tmp_path, FakeRecordingCalvin(), per_task=5)
  assert counts == {t: {"accepted": 5, "rejected": 0, "attempts": 5} for t in TASKS}
  out = tmp_path / "out"
  summary = record_demos.assemble(work, out, TASKS, 5, val_fraction=0.3)
  assert summary["training"]["episodes"] + summary["validation"]["episodes"] == 15
  assert summary["validation"]["episodes"] > 0
  assert not list(tmp_path.glob(".out.tmp-*"))

  first = 0
  for split in ("training", "validation"):
    folder = out / split
    episodes = [record_demos.is_validation(t, i, 0.3) == (split == "validation")
                for i in range(5) for t in TASKS]
    n_eps = sum(episodes)
    ids = np.load(folder / "ep_start_end_ids.npy")
    lens = np.load(folder / "ep_lens.npy")
    assert ids.dtype == np.int64 and ids.shape == (n_eps, 2) and lens.dtype == np.int64
    np.testing.assert_array_equal(ids[:, 1] - ids[:, 0] + 1, lens)
    assert ids[0, 0] == first and np.all(ids[1:, 0] == ids[:-1, 1] + 1)  # contiguous frame ids
    assert np.load(folder / "scene_info.npy", allow_pickle=True).item() == {
        "calvin_scene_D": [int(ids[0, 0]), int(ids[-1, 1])]}
    assert (folder / ".hydra" / "merged_config.yaml").read_text().startswith("env:")
    ann = np.load(folder / "lang_annotations" / "auto_lang_ann.npy", allow_pickle=True).item()
    assert [tuple(w) for w in ann["info"]["indx"]] == [tuple(r) for r in ids.tolist()]
    assert ann["info"]["episodes"] == []
    # each demo: as many frames as the oracle needed steps (the done frame is not stored)
    assert [STEPS[t] for t in ann["language"]["task"]] == lens.tolist()
    backend = FakeRecordingCalvin()
    for task, instruction in zip(ann["language"]["task"], ann["language"]["ann"]):
      assert instruction in backend.annotations(split)[task]

    split_info = raw.load_split(folder)
    assert [(s.start, s.end, s.task, s.instruction) for s in split_info.segments] == [
        (int(a), int(b), t, i) for (a, b), t, i in zip(ids, ann["language"]["task"], ann["language"]["ann"])]
    assert set(split_info.statistics) == {"robot_obs", "scene_obs", "act_min_bound", "act_max_bound"}
    with np.load(raw.episode_path(folder, int(ids[0, 0]))) as npz:
      assert sorted(npz.files) == sorted(raw.EPISODE_SPEC)
      for key, (shape, kind) in raw.EPISODE_SPEC.items():
        assert npz[key].shape == shape, key
        assert npz[key].dtype == (np.uint8 if kind == "u8" else np.float32), key
      rel, act, robot = npz["rel_actions"], npz["actions"], npz["robot_obs"]
    # CALVIN's relation between the two action keys (calvin_env to_relative_action)
    np.testing.assert_allclose(np.clip((act[:3] - robot[:3]) / 0.02, -1, 1), rel[:3], atol=1e-4)
    d_orn = (act[3:6] - robot[3:6] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(np.clip(d_orn / 0.05, -1, 1), rel[3:6], atol=1e-4)
    assert rel[6] in (-1.0, 1.0) and act[6] == rel[6]
    first = int(ids[-1, 1]) + 1

  data_dir = tmp_path / "tfds"
  result = builder.convert(out, data_dir, workers=0, progress=False)
  frames = pipeline.ConvertedFrames(data_dir, "train")
  assert len(frames) == int(np.load(out / "training" / "ep_lens.npy").sum())
  assert result["splits"]["validation"]["segments"] == summary["validation"]["episodes"]


def test_executed_actions_are_recorded(tmp_path):
  """rel_actions are exactly what the env received, frame t the observation before step t."""
  backend = FakeRecordingCalvin()
  robot, scene = backend.initial_state({"led": 0})
  result = backend.scripted_demo("move_slider_left", 7, robot, scene)
  env = backend.env
  frames = result["frames"]
  assert result["success"] and result["steps"] == 5
  np.testing.assert_array_equal(np.stack(env.actions), frames["rel_actions"].astype(np.float64))
  np.testing.assert_array_equal(frames["robot_obs"][0], robot.astype(np.float32))


def test_oracle_rejected_demos_are_never_written(tmp_path):
  backend = FakeRecordingCalvin(steps_needed={"open_drawer": 3, "turn_on_led": 2,
                                              "move_slider_right": 50})  # > max_steps: never solved
  work, counts = _record(tmp_path, backend, per_task=2, max_steps=10, max_attempts=3)
  assert counts["move_slider_right"] == {"accepted": 0, "rejected": 3, "attempts": 3}
  assert counts["open_drawer"]["accepted"] == 2
  assert not (work / "demos" / "move_slider_right").exists()
  assert len(list((work / "rejects" / "move_slider_right").glob("*.json"))) == 3
  summary = record_demos.assemble(work, tmp_path / "out", TASKS, 2, val_fraction=0.0, allow_short=True)
  ann = np.load(tmp_path / "out" / "training" / "lang_annotations" / "auto_lang_ann.npy",
                allow_pickle=True).item()
  assert "move_slider_right" not in ann["language"]["task"]
  assert summary["training"]["episodes"] == 4
  with pytest.raises(record_demos.RecorderError, match="move_slider_right: 0 of 2 demos"):
    record_demos.assemble(work, tmp_path / "out2", TASKS, 2)


def test_killed_recording_resumes_without_duplicates(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    _record(tmp_path, FakeRecordingCalvin(fail_after=5), per_task=4)
  work = tmp_path / "out.work"
  # a write cut short by the kill leaves only a temp file, which never counts
  (work / "demos" / "turn_on_led" / ".000009.npz.abc.tmp").write_bytes(b"partial")
  before = {t: record_demos.Work(work).done(t)[0] for t in TASKS}
  assert sum(map(len, before.values())) == 5

  resumed = FakeRecordingCalvin()
  _, counts = _record(tmp_path, resumed, per_task=4)
  assert len(resumed.calls) == 12 - 5  # only the missing attempts are played
  assert {t: c["accepted"] for t, c in counts.items()} == {t: 4 for t in TASKS}
  for task in TASKS:
    assert record_demos.Work(work).done(task)[0] == [0, 1, 2, 3]
  assert not list(work.rglob("*.tmp"))

  # the same seeds give the same demos as an uninterrupted run
  fresh_dir = tmp_path / "fresh"
  fresh_dir.mkdir()
  _record(fresh_dir, FakeRecordingCalvin(), per_task=4)
  for task in TASKS:
    for index in range(4):
      a, _ = record_demos._load_demo(record_demos.Work(work).demo(task, index))
      b, _ = record_demos._load_demo(record_demos.Work(fresh_dir / "out.work").demo(task, index))
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])

  out = tmp_path / "out"
  record_demos.assemble(work, out, TASKS, 4, val_fraction=0.0)
  ids = np.load(out / "training" / "ep_start_end_ids.npy")
  assert len(ids) == 12 and len({tuple(r) for r in ids.tolist()}) == 12
  assert len(raw.list_frame_ids(out / "training")) == int(np.load(out / "training" / "ep_lens.npy").sum())


def test_a_crashed_service_is_replaced_and_the_attempt_replayed(tmp_path):
  """A native crash of the simulator (seen after ~1 h of EGL rendering) costs one replayed
  attempt, not the run: the same seeded attempt is played on a fresh service."""
  first = FakeRecordingCalvin(crash_at=4)
  spares = [FakeRecordingCalvin(), FakeRecordingCalvin()]
  _, counts = _record(tmp_path, first, per_task=2, restart=spares.pop)
  assert {t: c["accepted"] for t, c in counts.items()} == {t: 2 for t in TASKS}
  assert first.closed and len(first.calls) == 4 and len(spares) == 1
  work = record_demos.Work(tmp_path / "out.work")
  assert all(work.done(t) == ([0, 1], []) for t in TASKS)
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  _record(fresh, FakeRecordingCalvin(), per_task=2)
  for task in TASKS:   # the replayed attempt is the one an uncrashed run makes
    for index in range(2):
      a, _ = record_demos._load_demo(work.demo(task, index))
      b, _ = record_demos._load_demo(record_demos.Work(fresh / "out.work").demo(task, index))
      assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_service_that_keeps_dying_stops_the_run(tmp_path):
  from gr1_jax.evaluation.calvin_backend import CalvinServiceDied
  with pytest.raises(CalvinServiceDied):
    _record(tmp_path, FakeRecordingCalvin(crash_at=0), per_task=1, max_restarts=2,
            restart=lambda: FakeRecordingCalvin(crash_at=0))


def test_changed_settings_are_refused(tmp_path):
  _record(tmp_path, FakeRecordingCalvin(), per_task=1)
  with pytest.raises(record_demos.RecorderError, match="other settings"):
    _record(tmp_path, FakeRecordingCalvin(), per_task=1, perturb=0.01)


def test_cli_with_fake_backend_and_parallel_workers(tmp_path, capsys):
  out = tmp_path / "ds"
  result = record_demos.main(["--out", str(out), "--tasks", "open_drawer,turn_on_led", "--per_task", "3",
                              "--workers", "2", "--val_fraction", "0.3"], backend=FakeRecordingCalvin())
  assert result["counts"] == {t: {"accepted": 3, "rejected": 0, "attempts": 3}
                              for t in ("open_drawer", "turn_on_led")}
  assert raw.load_split(out / "training").segments
  printed = capsys.readouterr().out
  assert "open_drawer: 3 accepted, 0 rejected by CALVIN's oracle" in printed
  # re-running re-assembles from the work dir (no new attempts) and may replace its own OUT
  again = record_demos.main(["--out", str(out), "--tasks", "open_drawer,turn_on_led", "--per_task", "3"],
                            backend=FakeRecordingCalvin(fail_after=0))
  assert again["summary"] == result["summary"]


def test_training_split_relabelled_with_the_evaluation_strings(tmp_path):
  out = tmp_path / "ds"
  common = ["--tasks", "open_drawer,turn_on_led", "--per_task", "3", "--val_fraction", "0.3"]
  record_demos.main(["--out", str(out), *common], backend=FakeRecordingCalvin())
  relabelled = tmp_path / "ds_evalstrings"
  record_demos.main(["--out", str(relabelled), "--work_dir", str(tmp_path / "ds.work"), "--assemble_only",
                     "--train_instructions", "validation", *common])
  backend = FakeRecordingCalvin()
  for split in ("training", "validation"):
    before, after = (raw.load_split(d / split).segments for d in (out, relabelled))
    assert [(s.start, s.end, s.task) for s in after] == [(s.start, s.end, s.task) for s in before]
    for segment in after:
      assert segment.instruction == backend.annotations("validation")[segment.task][0]
    for name in ("ep_start_end_ids.npy", "ep_lens.npy"):
      np.testing.assert_array_equal(np.load(out / split / name), np.load(relabelled / split / name))
  # the default labels of training/ are CALVIN's training paraphrases, never the evaluation string
  for segment in raw.load_split(out / "training").segments:
    assert segment.instruction in backend.annotations("training")[segment.task]
    assert segment.instruction not in backend.annotations("validation")[segment.task]
  # both assemblies are rebuilt from the work dir on a re-run, neither refused as foreign
  record_demos.main(["--out", str(out), "--assemble_only", *common])
  record_demos.main(["--out", str(relabelled), "--work_dir", str(tmp_path / "ds.work"), "--assemble_only",
                     "--train_instructions", "validation", *common])


def test_unknown_task_is_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    record_demos.main(["--out", str(tmp_path / "x"), "--tasks", "fly"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.startswith("error: no script for task 'fly'")


@pytest.mark.parametrize("python", ["missing", "project"])
def test_missing_calvin_is_one_line(tmp_path, python):
  exe = str(tmp_path / "no_python") if python == "missing" else sys.executable
  proc = subprocess.run([sys.executable, "-m", "data_pipelines.calvin.record_demos", "--out",
                         str(tmp_path / "ds"), "--calvin_python", exe, "--tasks", "open_drawer"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "calvin_setup.sh" in lines[0]
  if python == "missing":
    assert f"--calvin_python {exe} does not exist" in lines[0]
  else:
    assert "missing" in lines[0] and "calvin_env" in lines[0] and sys.executable in lines[0]


def test_scripts_exist_for_every_fixture_and_block_task():
  rng = np.random.default_rng(0)
  scene = np.zeros(24)
  scene[6:9], scene[12:15], scene[18:21] = [0.05, -0.12, 0.46], [0.23, -0.12, 0.46], [-0.24, 0.09, 0.46]
  for task in scripted_tasks.TASKS:
    script = scripted_tasks.make_script(task, np.zeros(15), scene, rng)
    action = script.act(np.zeros(15), scene, np.array([0.0, -0.2, 0.6]), np.array([np.pi, 0, 1.5]))
    assert action.shape == (7,) and action[6] in (-1.0, 1.0) and np.all(np.abs(action[:6]) <= 1)
  with pytest.raises(KeyError, match="no script"):
    scripted_tasks.make_script("stack_block", np.zeros(15), scene, rng)
