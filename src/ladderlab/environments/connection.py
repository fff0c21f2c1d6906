"""The connection file: how learner code outside the Docker engine's reach
(the grading sandbox, or a JupyterLab that itself runs in a container) finds an
environment's hosts and reaches them over SSH.

It holds the environment's SSH key, so it is written 0600 and only for the
hosts the holder may use: at grading time, probe hosts are listed (their
addresses are part of the exercise) but marked unreachable, and their sshd
trusts a different key that nobody keeps.

This module imports nothing but the standard library: it runs in the sandbox.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
ENV_VAR = "LADDERLAB_CONNECT"


@dataclass
class HostEntry:
    address: str
    role: str
    ssh_host_key: str | None = None
    reachable: bool = True


@dataclass
class Connection:
    lab: str
    env_id: str
    learner: str
    params: dict[str, str | int]
    expires: float
    hosts: dict[str, HostEntry]
    private_key: str
    answers_path: str = ""
    grading: bool = False
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Connection:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a ladderlab connection file of version {VERSION}")
        hosts = {k: HostEntry(**v) for k, v in data.pop("hosts").items()}
        return cls(hosts=hosts, **data)

    def write(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.to_json())


def from_environment() -> Connection | None:
    """The connection named by ``$LADDERLAB_CONNECT``, if set."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    return Connection.from_json(Path(path).read_text())
