"""Readiness strategies: a host is ready when every one of its checks passes.

One poll loop (:func:`wait_ready`) with a timeout serves all strategies; on
timeout the host's recent logs are attached to the error as a note.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ladderlab.environments.transports.base import Transport
from ladderlab.errors import EnvError, ReadinessTimeout, TransportError


class Probe(Protocol):
    """What a strategy may look at: the host's address, a transport, its logs."""

    address: str
    direct: bool  # may we open TCP connections to ``address`` from this process?
    transport: Transport

    def logs(self) -> str: ...
    def running(self) -> bool: ...


@dataclass(frozen=True)
class PortOpen:
    port: int

    def __str__(self) -> str:
        return f"tcp port {self.port}"

    def ready(self, probe: Probe) -> bool:
        if probe.direct:
            try:
                with socket.create_connection((probe.address, self.port), timeout=0.5):
                    return True
            except OSError:
                return False
        # Not reachable from here (a remote engine, a cluster node): connect from inside the host (bash's /dev/tcp;
        # the port is an int, so formatting it in is safe).
        result = probe.transport.run(f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{int(self.port)}'", timeout=5)
        return result.succeeded


@dataclass(frozen=True)
class CommandSucceeds:
    command: str

    def __str__(self) -> str:
        return f"command {self.command!r}"

    def ready(self, probe: Probe) -> bool:
        try:
            return probe.transport.run(self.command, timeout=10).succeeded
        except TransportError:
            return False


@dataclass(frozen=True)
class LogContains:
    text: str

    def __str__(self) -> str:
        return f"log line {self.text!r}"

    def ready(self, probe: Probe) -> bool:
        return self.text in probe.logs()


class Strategy(Protocol):
    def ready(self, probe: Probe) -> bool: ...


def wait_ready(env_id: str, host: str, probe: Probe, strategies: list[Strategy], timeout: float,
               clock: Callable[[], float] = time.monotonic) -> float:
    """Poll until every strategy is ready; return the seconds it took."""
    started = clock()
    pending = list(strategies)
    delay = 0.02
    while True:
        pending = [s for s in pending if not s.ready(probe)]
        if not pending:
            return clock() - started
        if not probe.running():
            err: EnvError = EnvError(f"host {host!r} of environment {env_id} exited while starting "
                                     f"(waiting for {pending[0]})")
            err.add_note(f"--- last log lines of {host} ---\n{probe.logs()}")
            raise err
        if clock() - started > timeout:
            exc = ReadinessTimeout(env_id, host, str(pending[0]), timeout)
            exc.add_note(f"--- last log lines of {host} ---\n{probe.logs()}")
            raise exc
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
