"""The policy server over real loopback sockets, driven by openpi's own client (openpi-client
from PyPI, installed with --no-deps: see requirements-test.txt).

A tiny GR-1 checkpoint is served; every action must equal GR1Policy.step called directly
on the same observations (same program, so bit-identical). A slow fake policy checks what
the event loop does while an inference runs.
"""
from __future__ import annotations

import gc
import socket
import threading
import time
import types
import urllib.request
import weakref

import numpy as np
import pytest
import websockets.sync.client
from flax import nnx

from gr1_jax.model_checkpoint import numpy_params, save_model_checkpoint
from gr1_jax.modules.gr1 import GR1
from gr1_jax.policy import GR1Policy
from gr1_jax.serving import msgpack_numpy
from gr1_jax.serving.policy_server import BackgroundServer, ObsKeys, PolicyServer, ServerStartError
from tests.conftest import tiny_config

websocket_client_policy = pytest.importorskip(
    "openpi_client.websocket_client_policy",
    reason="openpi-client is installed apart: pip install --no-deps -r requirements-openpi-client.txt")

A, B = "push the blue block to the left", "open the drawer"


def random_obs(rng):
  robot = rng.uniform(-1.0, 1.0, 15)
  robot[14] = rng.choice([-1.0, 1.0])
  return {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                      "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
          "robot_obs": robot}


def flat(obs, prompt):
  return {"observation/image": obs["rgb_obs"]["rgb_static"],
          "observation/wrist_image": obs["rgb_obs"]["rgb_gripper"],
          "observation/state": obs["robot_obs"], "prompt": prompt}


def direct_run(policy, episode):
  """GR1Policy.step on [(obs, prompt), ...] from a fresh history."""
  policy.reset()
  return [policy.step(obs, prompt) for obs, prompt in episode]


def client(port):
  return websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port)


def wait_until(condition, timeout_s=10.0):
  deadline = time.monotonic() + timeout_s
  while not condition():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.01)
  return True


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  cfg = tiny_config()
  path = tmp_path_factory.mktemp("serving") / "ckpt"
  save_model_checkpoint(str(path), numpy_params(GR1(cfg, rngs=nnx.Rngs(0))), cfg)
  return str(path)


@pytest.fixture(scope="module")
def served(checkpoint):
  with BackgroundServer(PolicyServer(GR1Policy.from_checkpoint(checkpoint))) as running:
    yield running


@pytest.fixture(scope="module")
def direct(checkpoint):
  """An independently loaded policy (its own compilation): the reference."""
  return GR1Policy.from_checkpoint(checkpoint)


def test_actions_equal_direct_policy_steps(served, direct):
  c = client(served.port)
  meta = c.get_server_metadata()
  assert meta["action_shape"] == [7] and meta["seq_len"] == 10
  assert meta["observation"]["observation/image"] == {"shape": [200, 200, 3], "dtype": "uint8"}
  rng = np.random.default_rng(0)
  first = [(random_obs(rng), A) for _ in range(13)]      # past the 10-step window
  second = [(random_obs(rng), A) for _ in range(3)]      # after {"reset": True}, CALVIN layout
  third = [(random_obs(rng), B) for _ in range(3)]       # a new prompt starts a new history
  got = []
  for obs, prompt in first:
    reply = c.infer(flat(obs, prompt))
    assert reply["actions"].shape == (7,) and reply["actions"].dtype == np.float32
    assert set(reply["server_timing"]) >= {"infer_ms", "wait_ms"}
    assert reply["server_timing"]["infer_ms"] < 1000      # a tiny step: ms; a compilation: seconds
    got.append(reply["actions"])
  reply = c.infer({"reset": True})
  assert reply["reset"] is True and "actions" not in reply
  got += [c.infer({**obs, "prompt": prompt})["actions"] for obs, prompt in second]
  got += [c.infer(flat(obs, prompt))["actions"] for obs, prompt in third]
  want = direct_run(direct, first) + direct_run(direct, second) + direct_run(direct, third)
  for t, (g, w) in enumerate(zip(got, want, strict=True)):
    np.testing.assert_array_equal(g, w, err_msg=f"step {t}")
  # The resets mattered: carrying the history on gives other actions.
  carried = direct_run(direct, first + second + third)
  assert not np.array_equal(np.stack(carried[13:]), np.stack(want[13:]))
  # Compiled once, at warm-up, for every connection and history length.
  assert served.server.policy.trace_counts["step"] == 1


def test_concurrent_clients_keep_separate_histories(served, direct):
  rng = np.random.default_rng(1)
  episodes = {"a": [(random_obs(rng), A) for _ in range(12)], "b": [(random_obs(rng), B) for _ in range(12)]}
  got, errors = {}, []

  def drive(name):
    try:
      c = client(served.port)
      got[name] = [c.infer(flat(obs, prompt))["actions"] for obs, prompt in episodes[name]]
    except Exception as exc:  # noqa: BLE001 - reported below
      errors.append(exc)

  threads = [threading.Thread(target=drive, args=(n,)) for n in episodes]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not errors, errors
  # Lock-step interleaving too: a then b on two connections, step by step.
  ca, cb = client(served.port), client(served.port)
  stepped = {"a": [], "b": []}
  for (obs_a, pa), (obs_b, pb) in zip(episodes["a"], episodes["b"]):
    stepped["a"].append(ca.infer(flat(obs_a, pa))["actions"])
    stepped["b"].append(cb.infer(flat(obs_b, pb))["actions"])
  for name, episode in episodes.items():
    want = np.stack(direct_run(direct, episode))
    np.testing.assert_array_equal(np.stack(got[name]), want, err_msg=f"client {name}, threads")
    np.testing.assert_array_equal(np.stack(stepped[name]), want, err_msg=f"client {name}, interleaved")


def test_bad_requests_name_the_key_and_keep_the_connection(served, direct):
  rng = np.random.default_rng(2)
  episode = [(random_obs(rng), A) for _ in range(3)]
  c = client(served.port)
  got = [c.infer(flat(*episode[0]))["actions"]]
  good = flat(*episode[1])
  bad = {
      "missing key 'observation/wrist_image'": {k: v for k, v in good.items() if k != "observation/wrist_image"},
      "'observation/image' has shape (100, 100, 3) and dtype uint8, expected uint8 (200, 200, 3)":
          {**good, "observation/image": np.zeros((100, 100, 3), np.uint8)},
      "'observation/image' has shape (200, 200, 3) and dtype float32":
          {**good, "observation/image": np.zeros((200, 200, 3), np.float32)},
      "'observation/state' has shape (7,)": {**good, "observation/state": np.zeros(7)},
      "'prompt' must be the language instruction (a string), got int": {**good, "prompt": 3},
      "'prompt' (the language instruction) is empty": {**good, "prompt": " "},
      "missing key 'rgb_obs/rgb_gripper'": {"rgb_obs": {"rgb_static": good["observation/image"]},
                                            "robot_obs": good["observation/state"], "prompt": A},
      "is the gripper action and must be -1 (closed) or +1 (open)":     # GR1Policy's own check
          {**good, "observation/state": np.full(15, 5.0)},
      "'reset' must be true or false": {"reset": "yes"},
  }
  for reason, request in bad.items():
    with pytest.raises(RuntimeError, match="Error in inference server") as info:
      c.infer(request)
      pytest.fail(f"no error for the request that should fail with {reason!r}")
    assert "bad request: " in str(info.value) and reason in str(info.value), str(info.value)
  got.append(c.infer(good)["actions"])                     # still usable; the errors added no frames
  # Frames openpi's client cannot produce: raw websocket.
  with websockets.sync.client.connect(f"ws://127.0.0.1:{served.port}", compression=None) as ws:
    msgpack_numpy.unpackb(ws.recv())                       # metadata
    for frame, reason in ((b"\xc1\x00garbage", "not a msgpack message"),
                          ("a text frame", "got a text frame"),
                          (msgpack_numpy.packb([1, 2]), "a request is a msgpack map (dict), got list"),
                          (msgpack_numpy.packb({"observation/image": {b"__ndarray__": True, b"data": b"12",
                                                                      b"dtype": "|u1", b"shape": [5]}}),
                           "needs 5 bytes, the message has 2")):
      ws.send(frame)
      answer = ws.recv()
      assert isinstance(answer, str) and answer.startswith("bad request: ") and reason in answer, answer
    ws.send(msgpack_numpy.packb(flat(*episode[0])))
    raw_first = msgpack_numpy.unpackb(ws.recv())["actions"]
  got.append(c.infer(flat(*episode[2]))["actions"])
  want = direct_run(direct, episode)
  np.testing.assert_array_equal(np.stack(got), np.stack(want))
  np.testing.assert_array_equal(raw_first, want[0])


def test_disconnect_frees_the_connection_history(served):
  before = served.server.num_sessions     # other tests' openpi clients stay connected
  rng = np.random.default_rng(3)
  with websockets.sync.client.connect(f"ws://127.0.0.1:{served.port}", compression=None) as ws:
    msgpack_numpy.unpackb(ws.recv())
    assert served.server.num_sessions == before + 1
    ws.send(msgpack_numpy.packb(flat(random_obs(rng), A)))
    assert msgpack_numpy.unpackb(ws.recv())["actions"].shape == (7,)
  assert wait_until(lambda: served.server.num_sessions == before)


# ----------------------------------------------------------------------------- a slow fake policy

class FakePolicy:
  """GR1Policy's serving interface. A model call sleeps `shared.delay_s` and predicts
  execute_actions actions [frames seen, k, ...] (k = 0..K-1), the first returned, the rest
  queued for the next steps, which do not observe (as GR1Policy does)."""
  static_shape, gripper_shape, robot_obs_dim = (200, 200, 3), (84, 84, 3), 15
  config = types.SimpleNamespace(use_hand_rgb=True)

  def __init__(self, shared, execute_actions=1):
    self.shared, self.execute_actions, self.steps, self.queue = shared, execute_actions, 0, []
    shared.forks.append(weakref.ref(self))

  def fork(self):
    return FakePolicy(self.shared, self.execute_actions)

  def reset(self):
    self.steps, self.queue = 0, []

  def step(self, obs, goal):
    if self.queue:
      return self.queue.pop(0)
    s = self.shared
    with s.guard:
      s.active += 1
      s.max_active = max(s.max_active, s.active)
    s.started.set()
    time.sleep(s.delay_s)
    with s.guard:
      s.active -= 1
    self.steps += 1
    actions = [np.array([self.steps, k, 0, 0, 0, 0, 1], np.float32) for k in range(self.execute_actions)]
    self.queue = actions[1:]
    return actions[0]


@pytest.fixture()
def fake(request):
  shared = types.SimpleNamespace(delay_s=0.0, active=0, max_active=0, started=threading.Event(),
                                 guard=threading.Lock(), forks=[])
  policy = FakePolicy(shared, execute_actions=getattr(request, "param", 1))
  with BackgroundServer(PolicyServer(policy, obs_keys=ObsKeys(static="cam"))) as running:
    shared.started.clear()          # set by the warm-up step
    yield running, shared


def fake_request():
  return {"cam": np.zeros((200, 200, 3), np.uint8), "observation/wrist_image": np.zeros((84, 84, 3), np.uint8),
          "observation/state": np.ones(15), "prompt": A}


def test_healthz_answers_while_an_inference_runs(fake):
  running, shared = fake
  shared.delay_s = 1.5
  c1, c2 = client(running.port), client(running.port)
  replies = {}
  threads = [threading.Thread(target=lambda n=n, c=c: replies.__setitem__(n, c.infer(fake_request())))
             for n, c in (("c1", c1), ("c2", c2))]
  threads[0].start()
  assert shared.started.wait(10)
  threads[1].start()
  start = time.monotonic()
  with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/healthz", timeout=1.0) as response:
    assert response.status == 200 and response.read() == b"OK\n"
  elapsed = time.monotonic() - start
  assert shared.active == 1, "the health check should have been answered during the inference"
  assert elapsed < 0.5, elapsed
  for t in threads:
    t.join(30)
  # Both clients were served, one inference at a time: the second waited for the first.
  assert shared.max_active == 1
  assert [replies[n]["actions"][0] for n in ("c1", "c2")] == [1.0, 1.0]    # a history each
  assert replies["c2"]["server_timing"]["wait_ms"] > 500


def test_a_closed_connection_drops_its_policy(fake):
  running, shared = fake
  with websockets.sync.client.connect(f"ws://127.0.0.1:{running.port}", compression=None) as ws:
    meta = msgpack_numpy.unpackb(ws.recv())
    assert meta["obs_keys"]["static"] == "cam" and "cam" in meta["observation"]
    for step in (1, 2):
      ws.send(msgpack_numpy.packb(fake_request()))
      assert msgpack_numpy.unpackb(ws.recv())["actions"][0] == step
    fork = shared.forks[-1]
    assert fork() is not None and running.server.num_sessions == 1
  assert wait_until(lambda: running.server.num_sessions == 0)
  gc.collect()
  assert fork() is None, gc.get_referrers(fork())


@pytest.mark.parametrize("fake", [3], indirect=True)
def test_execute_actions_k_replies_with_one_model_call_of_k_actions(fake):
  running, shared = fake
  c = client(running.port)
  assert c.get_server_metadata()["action_shape"] == [3, 7]
  for frame in (1, 2):
    actions = c.infer(fake_request())["actions"]
    assert actions.shape == (3, 7) and actions.dtype == np.float32
    np.testing.assert_array_equal(actions[:, :2], [[frame, 0], [frame, 1], [frame, 2]])
  assert c.infer({"reset": True})["reset"] is True
  assert c.infer(fake_request())["actions"][0, 0] == 1     # the reset emptied the queue and the history


def test_a_taken_port_is_a_one_line_user_error():
  shared = types.SimpleNamespace(delay_s=0.0, active=0, max_active=0, started=threading.Event(),
                                 guard=threading.Lock(), forks=[])
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(ServerStartError, match=f"cannot listen on 127.0.0.1:{port}: address already in use"):
      with BackgroundServer(PolicyServer(FakePolicy(shared)), port=port):
        pass
