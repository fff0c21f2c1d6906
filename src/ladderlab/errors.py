"""Every exception ladderlab raises on purpose, and the messages users see.

Verdicts are data (a failed check is not an exception); these are for
infrastructure faults and bad input. Each carries the context an operator needs
and maps to a process exit code in the CLI.
"""

from __future__ import annotations


class LadderlabError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(LadderlabError, ValueError):
    """A file a human wrote (course.yaml, env.yaml, lab metadata) is invalid.

    The message names the file, the path of the field inside it and what was
    expected, e.g. ``course.yaml: labs[0].cells[1].level: expected an integer 1-6``.
    """

    exit_code = 2

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {where}: {what}" if where else f"{file}: {what}" for where, what in problems]
        super().__init__("\n".join(lines))


class UsageError(LadderlabError, ValueError):
    """A command-line argument or API argument is invalid (unknown env, bad learner id)."""

    exit_code = 2


class EngineUnavailable(LadderlabError, RuntimeError):
    """No Docker engine answers and ladderlab could not (or may not) start one."""

    exit_code = 3


class ImageError(LadderlabError, RuntimeError):
    """An image could not be bootstrapped or built. ``log`` holds the build output tail."""

    def __init__(self, message: str, log: str = "") -> None:
        self.log = log
        super().__init__(message if not log else f"{message}\n--- build log (tail) ---\n{log}")


class EnvError(LadderlabError, RuntimeError):
    """An environment could not be brought up, found or torn down."""


class ReadinessTimeout(EnvError, TimeoutError):
    """A host did not become ready in time; the host's recent logs are attached as a note."""

    def __init__(self, env_id: str, host: str, strategy: str, timeout: float) -> None:
        self.env_id = env_id
        self.host = host
        self.strategy = strategy
        self.timeout = timeout
        super().__init__(
            f"host {host!r} of environment {env_id} was not ready after {timeout:.0f}s "
            f"(waiting for {strategy})"
        )


class TransportError(LadderlabError, RuntimeError):
    """A command could not be delivered to a host (not: the command failed)."""


class CommandTimeout(TransportError, TimeoutError):
    """A command ran past its timeout and was killed."""


class LearnerState(LadderlabError):
    """What the learner left (or their code made) cannot be judged as it stands: a file past the reader's
    limit, a special file where a config belongs, control characters in text a check parses.

    A check that meets it fails with this message as its feedback; it is never a grading error.
    """


class GradingIncomplete(LadderlabError, RuntimeError):
    """The grader could not judge a submission (infrastructure, our own tools). Nothing is recorded;
    grading it again later gives the learner's honest score."""

    exit_code = 4
