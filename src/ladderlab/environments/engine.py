"""Finding, and where allowed starting, the Docker engine.

``ensure_engine`` returns a client that answers. When none answers and we are
root on a machine with apt (a fresh CI machine), it installs Debian's
``docker.io`` and starts ``dockerd`` with its log under the cache dir;
anywhere else it raises :class:`EngineUnavailable` saying what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import DockerException

from ladderlab.config import Settings
from ladderlab.errors import EngineUnavailable

Say = Callable[[str], None]

HOW_TO = (
    "No Docker engine answers at {where}.\n"
    "  - Debian/Ubuntu: sudo apt-get install docker.io && sudo systemctl start docker\n"
    "  - then let your user use it: sudo usermod -aG docker $USER (and log in again)\n"
    "  - or point DOCKER_HOST at a reachable engine (ssh://user@host works)\n"
    "Run `ladderlab doctor` to check again."
)


def _where() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: float = 60) -> docker.DockerClient:
    """A client for the configured engine; raises EngineUnavailable if it does not answer."""
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except DockerException as exc:
        raise EngineUnavailable(HOW_TO.format(where=_where()) + f"\n(detail: {exc})") from None
    return client


def _answers() -> bool:
    try:
        docker.from_env(timeout=5).ping()
    except DockerException:
        return False
    return True


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None and "DOCKER_HOST" not in os.environ


def _run_logged(cmd: list[str], log: Path, say: Say, what: str) -> None:
    say(f"{what}: {' '.join(cmd)} (log: {log})")
    with log.open("ab") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT,
                             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if rc != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise EngineUnavailable(f"{what} failed (exit {rc}); see {log}\n{tail}")


def apt_install(packages: list[str], settings: Settings, say: Say) -> None:
    """Install Debian packages (root with apt only), logging under the cache dir."""
    log = settings.cache_dir / "apt.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    _run_logged(["apt-get", "update"], log, say, "apt-get update")
    _run_logged(["apt-get", "install", "-y", "--no-install-recommends", *packages], log, say,
                f"installing {' '.join(packages)}")


def start_dockerd(settings: Settings, say: Say, wait: float = 90) -> None:
    """Start dockerd in its own session, log to ``<cache>/dockerd.log``, wait until it answers."""
    log = settings.cache_dir / "dockerd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        say("starting docker with systemctl")
        subprocess.call(["systemctl", "start", "docker"])
        proc = None
    else:
        say(f"starting dockerd (log: {log})")
        fh = log.open("ab")
        proc = subprocess.Popen(["dockerd"], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        fh.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _answers():
            say("docker engine is up")
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise EngineUnavailable(f"dockerd did not answer within {wait:.0f}s; log {log}:\n{tail}")


def ensure_engine(settings: Settings, say: Say = print, install: bool = True) -> docker.DockerClient:
    """Return a client for a running engine, installing and starting one if we may."""
    if _answers():
        return connect()
    if not install or not _can_install():
        raise EngineUnavailable(HOW_TO.format(where=_where()))
    if shutil.which("dockerd") is None:
        apt_install(["docker.io"], settings, say)
    start_dockerd(settings, say)
    return connect()
