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
    """The outcome of one command on one host, whatever carried it (and what ``lab.sh`` returns).

    It shows like a terminal: ``str()`` is the output, ``repr()`` (what a notebook displays) is the
    output and the error output, with the exit status when the command failed.

    >>> CommandResult("false", 1, "", "boom\\n", host="target")
    boom
    [exit 1]
    """

    command: str
    rc: int
    stdout: str
    stderr: str
    host: str = ""

    @property
    def succeeded(self) -> bool:
        return self.rc == 0

    @property
    def failed(self) -> bool:
        return self.rc != 0

    @property
    def ok(self) -> bool:
        """The learner API's name for :attr:`succeeded`."""
        return self.rc == 0

    def __str__(self) -> str:
        return self.stdout

    def __repr__(self) -> str:
        tail = "" if self.rc == 0 else f"\n[exit {self.rc}]"
        shown = (self.stdout + self.stderr).rstrip("\n") + tail
        return shown or f"[{self.host or 'host'}: exit {self.rc}, no output]"


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
