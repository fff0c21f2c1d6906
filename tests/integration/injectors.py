"""Real fault injection for grading tests: act on the engine when it reports an event, or cut the
grader's connection to the engine for a while (a unix-socket proxy in front of the real socket)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker

from ladderlab.environments import labels as L


class OnEvent:
    """Watch the engine's container events for one learner; call ``action(client, event)`` on the first
    event matching ``action_name`` and ``kind`` (the container's io.ladderlab.kind label), once."""

    def __init__(self, client: docker.DockerClient, learner: str, action_name: str, kind: str,
                 action: Callable[[docker.DockerClient, dict], None], role: str | None = None) -> None:
        self.client, self.learner, self.action_name, self.kind, self.role = client, learner, action_name, kind, role
        self.action = action
        self.fired: dict | None = None
        self.errors: list[BaseException] = []
        self._events = client.api.events(decode=True, filters={
            "type": "container", "event": [action_name], "label": [f"{L.LEARNER}={learner}"]})
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for event in self._events:
                attrs = (event.get("Actor") or {}).get("Attributes") or {}
                if attrs.get(L.KIND) != self.kind or (self.role and attrs.get(L.ROLE) != self.role):
                    continue
                if self.fired is None:
                    self.fired = event
                    self.action(self.client, event)
        except BaseException as exc:  # the stream closing ends the watch
            if self.fired is None:
                self.errors.append(exc)

    def __enter__(self) -> OnEvent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._events.close()


class FlakyEngine:
    """A unix socket that relays to the real engine, and goes dark for ``outage`` seconds (every
    connection cut, new ones refused) the first time a request matching ``trigger`` passes through."""

    def __init__(self, directory: Path, trigger: bytes, outage: float = 3.0,
                 upstream: str = "/var/run/docker.sock") -> None:
        self.path = str(directory / "engine.sock")
        self.trigger = re.compile(trigger)
        self.outage = outage
        self.upstream = upstream
        self.down_until = 0.0
        self.tripped = 0.0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        os.chmod(self.path, 0o600)
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def down(self) -> bool:
        return time.monotonic() < self.down_until

    def _cut(self) -> None:
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down():
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if requests and not self.tripped and self.trigger.search(data):
                    self.tripped = time.monotonic()
                    self.down_until = self.tripped + self.outage
                    self._cut()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.server.close()
        self._cut()
