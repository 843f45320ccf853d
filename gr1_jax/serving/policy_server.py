"""A GR1Policy behind a websocket, speaking the protocol of openpi's policy client.

    server = PolicyServer(GR1Policy.from_checkpoint("ckpt"))   # compiles (warm-up) here
    server.serve_forever("0.0.0.0", 8000)

and on the robot, unmodified (`pip install --no-deps openpi-client`, see requirements-test.txt):

    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    client = WebsocketClientPolicy("robot-server", 8000)      # receives the metadata dict
    reply = client.infer({"observation/image": static_u8, "observation/wrist_image": wrist_u8,
                          "observation/state": robot_obs, "prompt": "open the drawer"})
    reply["actions"]          # float32 (7,), or (K, 7) with execute_actions=K
    client.infer({"reset": True})                            # new episode: clear the history

Protocol (one websocket connection = one episode stream; messages are msgpack with numpy
arrays encoded as in gr1_jax/serving/msgpack_numpy.py):
  * on connect the server sends one binary message: the metadata dict (action shape,
    observation keys with their shapes and dtypes, mode, seq_len, ...);
  * the client sends a request map, the server answers each with exactly one message:
      - observation request, flat openpi-style keys (names configurable, ObsKeys):
        {"observation/image": uint8 (200,200,3), "observation/wrist_image": uint8 (84,84,3),
         "observation/state": numeric (15,) CALVIN robot_obs, "prompt": str}
        or CALVIN's own nested layout:
        {"rgb_obs": {"rgb_static": ..., "rgb_gripper": ...}, "robot_obs": ..., "prompt": str};
        reply {"actions": float32 (7,) | (K, 7), "server_timing": {...}} (below);
      - {"reset": True}: clears this connection's history; reply {"reset": True}. "reset": True
        may also ride along with an observation (reset, then act on it);
      - a prompt different from the connection's previous one also clears the history;
  * a request the server cannot use (not msgpack, a text frame, a missing key, an image of the
    wrong shape or dtype, an empty prompt, ...) is answered with a TEXT frame
    "bad request: <reason naming the key>"; openpi's client raises RuntimeError with that text.
    The history is left as it was (except that a request with a new prompt which only the
    policy itself rejects, e.g. a gripper value not +-1, has already cleared it) and the
    connection stays open for the next request;
  * a server-side bug is answered with a text frame holding the traceback, and the connection
    is closed with code 1011 (internal error).
server_timing (milliseconds): infer_ms = the policy call, wait_ms = the wait for the model
(another connection's inference), prev_total_ms = the previous request of this connection
from its arrival to its reply being sent (as openpi's server reports it).

Each connection gets its own history: a GR1Policy.fork() of the loaded policy (shared
parameters and compiled functions), dropped when the connection closes. Inference runs in
a one-thread executor under a lock, one at a time per model, so the event loop stays free:
handshakes, `/healthz` (HTTP GET -> 200 "OK") and other clients' messages are answered
while a step runs.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import http
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import CloseCode

from gr1_jax.policy import PolicyInputError
from gr1_jax.serving import msgpack_numpy
from gr1_jax.serving.msgpack_numpy import WireFormatError
from gr1_jax.user_errors import ConfigError, UserError

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
CALVIN_CAMERAS = ("rgb_obs", "robot_obs")


class RequestError(ValueError):
  """A request the server cannot act on; the message names the key and what was expected."""


class ServerStartError(UserError, OSError):
  """The server cannot listen on the address it was given."""


@dataclasses.dataclass(frozen=True)
class ObsKeys:
  """Which key of a flat request holds which input of the policy."""
  static: str = "observation/image"          # static camera, uint8 HWC (rgb_obs.rgb_static)
  gripper: str = "observation/wrist_image"   # wrist camera, uint8 HWC (rgb_obs.rgb_gripper)
  state: str = "observation/state"           # CALVIN robot_obs vector
  prompt: str = "prompt"                     # the language instruction (also in the CALVIN layout)

  @classmethod
  def with_overrides(cls, items: Iterable[str], base: ObsKeys | None = None) -> ObsKeys:
    """base (default ObsKeys()) with "name=key" items applied, e.g. "static=observation/exterior_image"."""
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for item in items:
      name, sep, key = item.partition("=")
      if not sep or not key:
        raise ConfigError(f"--obs_key {item!r}: expected NAME=KEY with NAME one of {', '.join(names)}")
      if name not in names:
        raise ConfigError(f"--obs_key {item!r}: unknown input {name!r}; choose one of {', '.join(names)}")
      changes[name] = key
    keys = dataclasses.replace(base or cls(), **changes)
    values = [getattr(keys, n) for n in names]
    if len(set(values)) != len(values):
      raise ConfigError(f"--obs_key: two inputs read the same key ({keys})")
    return keys


@dataclasses.dataclass(frozen=True)
class _Request:
  reset: bool
  obs: dict | None = None      # CALVIN layout, ready for GR1Policy.step
  prompt: str | None = None


def _expected(shape, dtype: str) -> dict:
  return {"shape": list(shape), "dtype": dtype}


class PolicyServer:
  """Serves one policy to any number of websocket clients (see the module docstring).

  policy: a GR1Policy (or anything with its interface: step, reset, fork, static_shape,
  gripper_shape, robot_obs_dim, execute_actions, config.use_hand_rgb).
  warmup: run warm_up() now, so that no client pays a compilation (the server listens
  only after this).
  """

  def __init__(self, policy, *, obs_keys: ObsKeys = ObsKeys(), metadata: Mapping[str, Any] | None = None,
               max_message_bytes: int = 64 << 20, warmup: bool = True):
    self._policy = policy
    self.obs_keys = obs_keys
    self.max_message_bytes = int(max_message_bytes)
    self.execute_actions = int(getattr(policy, "execute_actions", 1))
    self._uses_gripper = bool(policy.config.use_hand_rgb)
    self.metadata = {**self._base_metadata(), **dict(metadata or {})}
    self._sessions: dict[int, Any] = {}
    self._ids = itertools.count()
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gr1-policy")
    self._lock: asyncio.Lock | None = None
    self._loop: asyncio.AbstractEventLoop | None = None
    self._server = None
    self.port: int | None = None
    self.warmup_s: float | None = None
    if warmup:
      self.warm_up()

  # ------------------------------------------------------------------ set-up
  def _base_metadata(self) -> dict:
    p, k = self._policy, self.obs_keys
    spec = {k.static: _expected(p.static_shape, "uint8"), k.state: _expected((p.robot_obs_dim,), "float")}
    if self._uses_gripper:
      spec[k.gripper] = _expected(p.gripper_shape, "uint8")
    spec[k.prompt] = {"type": "str"}
    actions = [7] if self.execute_actions == 1 else [self.execute_actions, 7]
    return {"server": "gr1_jax.serving.policy_server", "policy": getattr(p, "source", type(p).__name__),
            "mode": getattr(p, "mode", None), "seq_len": getattr(p, "seq_len", None),
            "execute_actions": self.execute_actions, "action_shape": actions,
            "observation": spec, "obs_keys": dataclasses.asdict(k),
            "reset_request": {"reset": True}}

  def warm_up(self) -> float:
    """Two requests' worth of steps on a blank observation, with a throw-away history:
    compiles everything a connection will run. Two, because GR1Policy's cached step is
    traced once but compiled twice: its first call gets freshly made (uncommitted) history
    buffers, the later ones get its own (committed) outputs, a different argument placement."""
    p = self._policy
    obs = {"rgb_obs": {"rgb_static": np.zeros(p.static_shape, np.uint8),
                       "rgb_gripper": np.zeros(p.gripper_shape, np.uint8)},
           "robot_obs": np.concatenate([np.zeros(p.robot_obs_dim - 1), [1.0]])}
    start = time.perf_counter()
    policy = p.fork()
    for _ in range(2):
      self._infer(policy, obs, "warm up")
    self.warmup_s = time.perf_counter() - start
    return self.warmup_s

  # ------------------------------------------------------------------ state
  @property
  def policy(self):
    """The loaded policy every connection forks from."""
    return self._policy

  @property
  def num_sessions(self) -> int:
    """Open connections, each holding one history."""
    return len(self._sessions)

  # ------------------------------------------------------------------ serving
  async def serve(self, host: str = "0.0.0.0", port: int = 8000, *, on_listening=None) -> None:
    """Serves until shutdown() (or cancellation). on_listening(port) is called once bound
    (port=0 picks a free port, reported there and in self.port)."""
    self._loop = asyncio.get_running_loop()
    self._lock = asyncio.Lock()
    try:
      server = await serve(self._handle, host, port, process_request=self._http_request,
                           compression=None, max_size=self.max_message_bytes)
    except OSError as exc:
      reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
      raise ServerStartError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc
    self._server = server
    try:
      self.port = server.sockets[0].getsockname()[1]
      logger.debug("serving on ws://%s:%d (GET %s for health)", host, self.port, HEALTH_PATH)
      if on_listening is not None:
        on_listening(self.port)
      await server.wait_closed()
    finally:
      server.close()
      await server.wait_closed()
      self._server = None

  def serve_forever(self, host: str = "0.0.0.0", port: int = 8000, *, on_listening=None) -> None:
    try:
      asyncio.run(self.serve(host, port, on_listening=on_listening))
    finally:
      self._executor.shutdown(wait=False)

  def shutdown(self) -> None:
    """Closes the server and every connection (thread-safe; serve() then returns)."""
    if self._loop is not None and self._server is not None:
      self._loop.call_soon_threadsafe(self._server.close)

  @staticmethod
  def _http_request(connection: ServerConnection, request):
    if request.path == HEALTH_PATH:
      return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None   # anything else: the websocket handshake

  async def _handle(self, ws: ServerConnection) -> None:
    session_id = next(self._ids)
    session = _Session(self._policy.fork())
    self._sessions[session_id] = session
    logger.info("connection %d from %s opened", session_id, ws.remote_address)
    try:
      await ws.send(msgpack_numpy.packb(self.metadata))
      async for message in ws:
        arrived = time.monotonic()
        try:
          reply = await self._respond(session, message)
        except RequestError as exc:
          await ws.send(f"bad request: {exc}")
          session.prev_total_ms = None
          continue
        except Exception:  # noqa: BLE001 - a bug: tell the client, log it, drop the connection
          logger.exception("connection %d: request failed", session_id)
          await ws.send(traceback.format_exc())
          await ws.close(CloseCode.INTERNAL_ERROR, "internal server error (traceback sent)")
          return
        if session.prev_total_ms is not None:
          reply["server_timing"]["prev_total_ms"] = session.prev_total_ms
        await ws.send(msgpack_numpy.packb(reply))
        session.prev_total_ms = 1000 * (time.monotonic() - arrived)
    except websockets.ConnectionClosed:
      pass
    finally:
      del self._sessions[session_id]
      logger.info("connection %d closed (%d open)", session_id, len(self._sessions))

  async def _respond(self, session: _Session, message) -> dict:
    request = self._parse(message)
    if request.reset:
      session.reset()
    if request.obs is None:
      return {"reset": True, "server_timing": {}}
    if request.prompt != session.prompt:
      session.reset()              # a new instruction starts a new episode
    queued = time.monotonic()
    async with self._lock:
      started = time.monotonic()
      try:
        actions = await self._loop.run_in_executor(self._executor, self._infer, session.policy,
                                                   request.obs, request.prompt)
      except PolicyInputError as exc:
        raise RequestError(str(exc)) from exc
      done = time.monotonic()
    session.prompt = request.prompt
    return {"actions": actions,
            "server_timing": {"infer_ms": 1000 * (done - started), "wait_ms": 1000 * (started - queued)}}

  def _infer(self, policy, obs: dict, prompt: str) -> np.ndarray:
    """execute_actions = K: one model call; its K actions in one reply (the K - 1 queued
    ones come out of the policy's queue without observing, as GR1Policy.step defines)."""
    first = policy.step(obs, prompt)
    if self.execute_actions == 1:
      return first
    return np.stack([first] + [policy.step(obs, prompt) for _ in range(self.execute_actions - 1)])

  # ------------------------------------------------------------------ requests
  def _parse(self, message) -> _Request:
    if isinstance(message, str):
      raise RequestError("requests are binary msgpack messages, got a text frame")
    try:
      request = msgpack_numpy.unpackb(message)
    except WireFormatError as exc:
      raise RequestError(str(exc)) from exc
    if not isinstance(request, Mapping):
      raise RequestError(f"a request is a msgpack map (dict), got {type(request).__name__}")
    reset = request.get("reset", False)
    if not isinstance(reset, (bool, np.bool_)):
      raise RequestError(f"'reset' must be true or false, got {reset!r}")
    if set(request) <= {"reset"}:
      if not reset:
        raise RequestError("empty request: send an observation or {'reset': True}")
      return _Request(reset=True)
    keys, p = self.obs_keys, self._policy
    if "rgb_obs" in request:          # CALVIN's nested layout
      cams = _get(request, "rgb_obs", "", Mapping, "a map of camera images")
      where = "rgb_obs/"
      static_key, gripper_key, state_key, state = "rgb_static", "rgb_gripper", "robot_obs", request
    else:
      cams, where = request, ""
      static_key, gripper_key, state_key, state = keys.static, keys.gripper, keys.state, request
    rgb_obs = {"rgb_static": _image(cams, static_key, where, p.static_shape)}
    if self._uses_gripper:
      rgb_obs["rgb_gripper"] = _image(cams, gripper_key, where, p.gripper_shape)
    robot = _vector(state, state_key, p.robot_obs_dim)
    prompt = _get(request, keys.prompt, "", str, "the language instruction (a string)")
    if not prompt.strip():
      raise RequestError(f"{keys.prompt!r} (the language instruction) is empty")
    return _Request(reset=bool(reset), obs={"rgb_obs": rgb_obs, "robot_obs": robot}, prompt=prompt)


class _Session:
  """One connection's episode: its own policy history and last instruction."""

  def __init__(self, policy):
    self.policy = policy
    self.prompt: str | None = None
    self.prev_total_ms: float | None = None

  def reset(self) -> None:
    self.policy.reset()
    self.prompt = None


def _get(mapping: Mapping, key: str, where: str, kind, what: str):
  if key not in mapping:
    raise RequestError(f"missing key {where + key!r} ({what}); the request has keys {sorted(map(str, mapping))}")
  value = mapping[key]
  if not isinstance(value, kind):
    raise RequestError(f"{where + key!r} must be {what}, got {type(value).__name__}")
  return value


def _image(cams: Mapping, key: str, where: str, shape) -> np.ndarray:
  image = _get(cams, key, where, np.ndarray, f"a uint8 image of shape {tuple(shape)}")
  if image.dtype != np.uint8 or image.shape != tuple(shape):
    raise RequestError(f"{where + key!r} has shape {image.shape} and dtype {image.dtype}, "
                       f"expected uint8 {tuple(shape)}")
  return image


def _vector(mapping: Mapping, key: str, dim: int) -> np.ndarray:
  value = _get(mapping, key, "", (np.ndarray, list, tuple), f"a numeric vector of shape ({dim},)")
  try:
    vector = np.asarray(value)
  except ValueError as exc:
    raise RequestError(f"{key!r} is not a numeric vector: {exc}") from exc
  if vector.shape != (dim,) or vector.dtype.kind not in "iuf":
    raise RequestError(f"{key!r} has shape {vector.shape} and dtype {vector.dtype}, "
                       f"expected a numeric ({dim},) vector")
  return vector


class BackgroundServer:
  """A PolicyServer's event loop in a daemon thread, for tests and benchmarks:

      with BackgroundServer(PolicyServer(policy)) as running:
        client = WebsocketClientPolicy("127.0.0.1", running.port)
  """

  def __init__(self, server: PolicyServer, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60.0):
    self.server, self.host, self._port, self._timeout_s = server, host, port, timeout_s
    self._listening = threading.Event()
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._run, name="gr1-policy-server", daemon=True)

  @property
  def port(self) -> int:
    return self.server.port

  def _run(self):
    try:
      asyncio.run(self.server.serve(self.host, self._port, on_listening=lambda _: self._listening.set()))
    except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
      self._error = exc
      self._listening.set()

  def __enter__(self) -> BackgroundServer:
    self._thread.start()
    if not self._listening.wait(self._timeout_s):
      raise TimeoutError(f"the policy server did not start within {self._timeout_s} s")
    if self._error is not None:
      raise self._error
    return self

  def __exit__(self, *exc_info):
    self.server.shutdown()
    self._thread.join(self._timeout_s)
