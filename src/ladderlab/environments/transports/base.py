"""What every transport shares: one result type and one quoting point.

>>> quote_command("ls -l -- %s", "/tmp/a b; rm -rf /")
"ls -l -- '/tmp/a b; rm -rf /'"
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ladderlab.errors import TransportError

#: Exit status of coreutils ``timeout`` when it had to stop the command.
TIMEOUT_RC = 124


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one command on one host, whatever carried it."""

    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def succeeded(self) -> bool:
        return self.rc == 0

    @property
    def failed(self) -> bool:
        return self.rc != 0

    def __repr__(self) -> str:
        return f"<CommandResult rc={self.rc} command={self.command[:60]!r}>"


def quote_command(command: str, *args: object) -> str:
    """Substitute ``args`` into ``%s`` slots, each shell-quoted. The only quoting point."""
    if not args:
        return command
    return command % tuple(shlex.quote(str(a)) for a in args)


class Transport(ABC):
    """How commands reach one host. Subclasses implement ``_run`` and little else."""

    name = "abstract"

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        """Run ``command`` (``%s`` slots filled from ``args``, quoted) with ``/bin/sh -c`` as root."""
        return self._run(quote_command(command, *args), timeout)

    def check_output(self, command: str, *args: object, timeout: float | None = None) -> str:
        """Like :meth:`run`, but raise if the command fails; return its stdout."""
        result = self.run(command, *args, timeout=timeout)
        if result.failed:
            raise TransportError(f"{self!r}: {result.command!r} exited {result.rc}: {result.stderr.strip()[:500]}")
        return result.stdout

    @abstractmethod
    def _run(self, command: str, timeout: float | None) -> CommandResult: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""
