"""Environments bound to the process that made them: removed as soon as that process is gone.

A grading environment holds the learner's root hosts; if the grader dies
mid-check (killed, out of memory, the machine's operator pressing Ctrl-C twice)
nothing in it runs any more, so its ``finally`` cannot tear down. Each grading
process therefore has one *guardian*: a small child process, in its own
session (a Ctrl-C to the grader's terminal does not reach it), that holds the
read end of a pipe whose write end only the grader holds. The grader tells it
``+ID`` when a bound environment is about to be made and ``-ID`` when it is
gone. When the pipe reaches end-of-file (the grader exited, however it
exited) the guardian tears down every environment still bound, and exits.

The reaper (``ladderlab env reap``) is the backstop: an environment labelled
``io.ladderlab.bound`` whose owner process is gone is reaped at once, whatever
its expiry.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

_lock = threading.Lock()
_guardian: Guardian | None = None


class Guardian:
    """The current process's guardian (start it with :func:`get`)."""

    def __init__(self, state_dir: Path, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ladderlab.environments.guardian", str(state_dir)],
                stdin=subprocess.PIPE, stdout=out, stderr=out, start_new_session=True, close_fds=True)
        assert self.proc.stdin is not None
        self.pipe: IO[bytes] = self.proc.stdin
        self.owner = os.getpid()

    def _say(self, line: str) -> None:
        with _lock:
            self.pipe.write(line.encode() + b"\n")
            self.pipe.flush()

    def bind(self, env_id: str) -> None:
        self._say(f"+{env_id}")

    def release(self, env_id: str) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._say(f"-{env_id}")


def get(state_dir: Path, log: Path) -> Guardian:
    """This process's guardian, started on first use (and again after a fork)."""
    global _guardian
    with _lock:
        if _guardian is None or _guardian.owner != os.getpid() or _guardian.proc.poll() is not None:
            _guardian = Guardian(state_dir, log)
        return _guardian


def release(env_id: str) -> None:
    """Unbind ``env_id`` if this process bound it (a no-op otherwise)."""
    if _guardian is not None and _guardian.owner == os.getpid():
        _guardian.release(env_id)


def _watch(state_dir: Path) -> int:
    """The guardian's own loop: read +ID/-ID until end-of-file, then tear down what is still bound."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    bound: set[str] = set()
    for raw in sys.stdin.buffer:
        line = raw.decode(errors="replace").strip()
        if line.startswith("+"):
            bound.add(line[1:])
        elif line.startswith("-"):
            bound.discard(line[1:])
    if not bound:
        return 0
    import shutil

    from ladderlab.environments.engine import connect
    from ladderlab.environments.runtime import teardown_everywhere

    client = connect()
    for env_id in sorted(bound):
        try:
            removed = teardown_everywhere(client, env_id)
            shutil.rmtree(state_dir / "envs" / env_id, ignore_errors=True)
            print(f"ladderlab guardian: the grader {os.getppid()} is gone; removed {env_id} ({removed} resources)",
                  flush=True)
        except Exception as exc:
            print(f"ladderlab guardian: could not remove {env_id}: {exc} (the reaper will)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_watch(Path(sys.argv[1])))
