"""Logic of the shared poll loop, the quoting point and owner tokens (no Docker).
The same behaviour runs against real hosts in tests/integration."""

from __future__ import annotations

import os
import subprocess

import pytest

from ladderlab.environments import labels as L
from ladderlab.environments.readiness import CommandSucceeds, LogContains, wait_ready
from ladderlab.environments.transports.base import CommandResult, Transport, quote_command
from ladderlab.errors import EnvError, ReadinessTimeout


class FakeTransport(Transport):
    name = "fake"

    def __init__(self, results):
        self.results = results
        self.seen = []

    def _run(self, command, timeout):
        self.seen.append(command)
        return CommandResult(command, self.results.get(command, 1), "", "")


class FakeProbe:
    address = "10.0.0.1"
    direct = False

    def __init__(self, results=None, log="", running=True):
        self.transport = FakeTransport(results or {})
        self._log = log
        self._running = running

    def logs(self):
        return self._log

    def running(self):
        return self._running


def test_ready_when_every_strategy_passes():
    probe = FakeProbe({"true": 0}, log="Server listening on :: port 22.")
    elapsed = wait_ready("e", "h", probe, [CommandSucceeds("true"), LogContains("listening")], timeout=1)
    assert elapsed < 1


def test_timeout_names_the_pending_strategy_and_attaches_logs():
    probe = FakeProbe(log="nginx: [emerg] bind() failed")
    with pytest.raises(ReadinessTimeout) as info:
        wait_ready("env-1", "web", probe, [CommandSucceeds("false")], timeout=0.2)
    assert "host 'web' of environment env-1" in str(info.value) and "command 'false'" in str(info.value)
    assert "bind() failed" in info.value.__notes__[0]
    assert isinstance(info.value, TimeoutError)


def test_exited_host_fails_fast():
    with pytest.raises(EnvError, match="exited while starting"):
        wait_ready("e", "h", FakeProbe(running=False), [CommandSucceeds("false")], timeout=30)


def test_quoting_point_neutralises_shell_metacharacters():
    hostile = "x'; touch /tmp/pwned; echo '"
    cmd = quote_command("echo %s", hostile)
    out = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    assert out == hostile + "\n"
    assert quote_command("ls") == "ls"


def test_owner_token_tells_live_dead_and_foreign():
    assert L.owner_alive(L.owner_token()) is True
    proc = subprocess.Popen(["true"])
    token = L.owner_token(proc.pid)
    proc.wait()
    assert L.owner_alive(token) is False
    assert L.owner_alive(f"elsewhere:{os.getpid()}:1") is None


def test_user_labels_cannot_override_reserved_ones():
    stamp = L.Stamp.new("env-1", "firewall", "lab", "ada", ttl_minutes=10)
    labels = stamp.labels(host="target", role="target", user={"io.ladderlab.expires": "9999999999", "team": "x"})
    assert labels["io.ladderlab.expires"] == str(int(stamp.expires))
    assert labels["team"] == "x"


def test_no_engine_and_no_permission_says_what_to_do(monkeypatch, settings):
    from ladderlab.environments import engine
    from ladderlab.errors import EngineUnavailable

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(EngineUnavailable) as info:
        engine.ensure_engine(settings, say=lambda _m: None)
    assert "apt-get install docker.io" in str(info.value) and "DOCKER_HOST" in str(info.value)
    assert info.value.exit_code == 3


def test_doctor_reports_missing_engine_with_a_fix(monkeypatch, settings):
    from ladderlab.doctor import diagnose

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    engine = next(f for f in diagnose(settings) if f.name == "docker engine")
    assert not engine.ok and engine.fix
