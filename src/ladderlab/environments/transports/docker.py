"""docker exec through the Docker API (no docker CLI, no shell on our side)."""

from __future__ import annotations

from typing import Any

from docker.errors import APIError, NotFound

from ladderlab.environments.transports.base import TIMEOUT_RC, CommandResult, Transport
from ladderlab.errors import CommandTimeout, TransportError


class DockerTransport(Transport):
    """Run commands in a container with ``docker exec``.

    >>> DockerTransport(client, "ll-firewall-1a2b3c4d-target").run("id -u").stdout   # doctest: +SKIP
    '0\\n'
    """

    name = "docker"

    def __init__(self, client: Any, container: str, user: str = "root") -> None:
        self.client = client
        self.container = container
        self.user = user

    def __repr__(self) -> str:
        return f"<docker {self.container}>"

    def _run(self, command: str, timeout: float | None) -> CommandResult:
        argv = ["/bin/sh", "-c", command]
        if timeout is not None:
            argv = ["timeout", "-k", "2", f"{timeout:g}", *argv]
        api = self.client.api
        try:
            exec_id = api.exec_create(self.container, argv, stdout=True, stderr=True, user=self.user)["Id"]
            out, err = api.exec_start(exec_id, demux=True)
            rc = api.exec_inspect(exec_id)["ExitCode"]
        except NotFound:
            raise TransportError(f"{self!r}: container not found (was the environment torn down?)") from None
        except APIError as exc:
            raise TransportError(f"{self!r}: docker exec failed: {exc.explanation or exc}") from None
        if timeout is not None and rc == TIMEOUT_RC:
            raise CommandTimeout(f"{self!r}: {command!r} ran past {timeout:g}s and was stopped")
        return CommandResult(command, int(rc if rc is not None else -1),
                             (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))
