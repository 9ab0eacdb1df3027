"""Fixtures for the hubcast end-to-end tests with the Python signalrcore client.

The ``server`` fixture spawns the hubcast binary (env HUBCAST_BIN, else
the debug build in cargo's target directory) on a free port, waits for
GET /healthz to answer 200 and kills it at the end. Every wait here polls a
condition against a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import socket
import subprocess
import threading
import time
from typing import Any, Callable, Optional

import pytest
import requests
from signalrcore.hub_connection_builder import HubConnectionBuilder

ROOT = pathlib.Path(__file__).resolve().parents[2]
def cargo_target_dir() -> pathlib.Path:
    """cargo's target directory (CARGO_TARGET_DIR and .cargo/config included)."""
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return pathlib.Path(json.loads(out)["target_directory"])


HUBCAST_BIN = pathlib.Path(
    os.environ.get("HUBCAST_BIN") or cargo_target_dir() / "debug" / "hubcast"
).resolve()
VERBOSE = os.environ.get("HUBCAST_TEST_VERBOSE") == "1"


def wait_for(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
             interval: float = 0.01, detail: Optional[Callable[[], str]] = None) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or fail."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout} s waiting for {what}"
            if last_error is not None:
                msg += f" (last error: {last_error!r})"
            if detail is not None:
                msg += "\n" + detail()
            pytest.fail(msg)
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strict_json(value: Any) -> str:
    """Canonical JSON text: equal only if types match too (1 != 1.0 != True)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class HubcastServer:
    def __init__(self, port: int):
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self._log: collections.deque[str] = collections.deque(maxlen=200)
        self.proc = subprocess.Popen(
            [str(HUBCAST_BIN), "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", "127.0.0.1:0", "--insecure"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._log.append(line)
            if VERBOSE:
                print(f"[hubcast] {line}", flush=True)

    def logs(self) -> str:
        return (f"--- hubcast (port {self.port}) output tail ---\n"
                + "\n".join(self._log) + "\n--- end ---")

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.origin}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def hub_url(self, hub_path: str) -> str:
        return f"{self.origin}{hub_path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    # --- HTTP API -----------------------------------------------------------

    def publish_to_group(self, hub: str, group: str, body: dict,
                         raw_utf8: bool = False) -> requests.Response:
        url = f"{self.origin}/api/v1/hubs/{hub}/groups/{requests.utils.quote(group, safe='')}"
        if raw_utf8:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            return requests.post(url, data=data, timeout=5,
                                 headers={"Content-Type": "application/json"})
        return requests.post(url, json=body, timeout=5)

    def group_members(self, hub: str, group: str) -> Optional[int]:
        url = f"{self.origin}/api/v1/hubs/{hub}/groups/{requests.utils.quote(group, safe='')}"
        res = requests.get(url, timeout=5)
        if res.status_code == 404:
            return 0
        res.raise_for_status()
        return res.json().get("members")


def start_server(timeout: float = 20.0) -> HubcastServer:
    if not HUBCAST_BIN.exists():
        pytest.fail(f"hubcast binary not found at {HUBCAST_BIN}: "
                    "run 'cargo build' or set HUBCAST_BIN")
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        server = HubcastServer(free_port())
        while server.proc.poll() is None and time.monotonic() < deadline:
            if server.healthy():
                return server
            time.sleep(0.05)
        last = f"exit code {server.proc.poll()}\n{server.logs()}"
        server.stop()
    pytest.fail(f"hubcast did not answer 200 on /healthz within {timeout} s: {last}")


@pytest.fixture(scope="session")
def server():
    srv = start_server()
    yield srv
    srv.stop()


class EventRecorder:
    def __init__(self, target: str):
        self.target = target
        self.events: list[list] = []
        self._lock = threading.Lock()

    def __call__(self, arguments: list) -> None:
        with self._lock:
            self.events.append(arguments)

    def wait_for_count(self, n: int, timeout: float = 5.0) -> list[list]:
        wait_for(lambda: len(self.events) >= n, timeout,
                 f"{n} '{self.target}' event(s)",
                 detail=lambda: f"received so far: {self.events!r}")
        with self._lock:
            return list(self.events)


class Client:
    """A signalrcore HubConnection with waitable open/close/invocation results."""

    def __init__(self, url: str, skip_negotiation: bool = False):
        options = {"skip_negotiation": True} if skip_negotiation else None
        self.hub = HubConnectionBuilder().with_url(url, options=options).build()
        self.opened = threading.Event()
        self.closed = threading.Event()
        self.errors: list = []
        self.completions: dict[str, Any] = {}
        self.hub.on_open(self.opened.set)
        self.hub.on_close(self.closed.set)
        self.hub.on_error(self._on_error)

    def _on_error(self, message: Any) -> None:
        self.errors.append(message)
        invocation_id = getattr(message, "invocation_id", None)
        if invocation_id is not None:
            self.completions[invocation_id] = message

    def start(self, timeout: float = 10.0) -> "Client":
        assert self.hub.start(), "HubConnection.start() returned False"
        assert self.opened.wait(timeout), "no on_open (handshake) within timeout"
        return self

    def on(self, target: str) -> EventRecorder:
        recorder = EventRecorder(target)
        self.hub.on(target, recorder)
        return recorder

    def invoke(self, method: str, arguments: list, timeout: float = 5.0) -> Any:
        """Invoke and wait for the Completion; returns the CompletionMessage."""
        holder: dict[str, Any] = {}

        def done(message: Any) -> None:
            self.completions[message.invocation_id] = message

        result = self.hub.send(method, arguments, on_invocation=done)
        holder["id"] = result.invocation_id
        return wait_for(lambda: self.completions.get(holder["id"]), timeout,
                        f"Completion of {method}{arguments!r}")

    def stop(self) -> None:
        # signalrcore's stop() can hang (it joins its reader thread, which sits
        # in a blocking recv): run it in a daemon thread, bounded, and shut the
        # socket down so that the reader wakes up.
        sock = getattr(getattr(self.hub.transport, "_client", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        t = threading.Thread(target=self.hub.stop, daemon=True)
        t.start()
        t.join(5)


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(url: str, skip_negotiation: bool = False) -> Client:
        c = Client(url, skip_negotiation=skip_negotiation)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()
