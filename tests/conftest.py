"""Shared fixtures. Integration tests (marked ``docker``) need a running engine
and built images: ``make test`` provides both; without them they fail loudly,
they are never silently skipped."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ladderlab.config import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env(ROOT)


@pytest.fixture(scope="session")
def client():
    from ladderlab.environments.engine import connect

    return connect()


@pytest.fixture(scope="session")
def images(client, settings):
    """Every image, built (a no-op when ``ladderlab setup`` already built them)."""
    from ladderlab.environments.images import build

    return build(client, settings, None, lambda _m: None)


# --- the labs' self-test, in the background -------------------------------------------------------------
#
# The self-test of every lab (tests/labs/test_selftest.py) is one `ladderlab selftest` process that grades
# for over twenty minutes, most of it waiting on the labs' own clocks. It starts in the background once the
# tests that need the machine to themselves have run, and the other tests run beside it; its own tests come
# last and wait for it. "The machine to themselves": the tamper tests (they count every container, sandbox
# process, host firewall chain and the Docker disk), the browser tests (their waits are for a quiet machine),
# and any test marked ``exclusive`` (it restarts the daemon, or takes an image's tag away).


@dataclass
class BackgroundResult:
    returncode: int
    stdout: str
    stderr: str
    wall: float  # seconds from its start to its end


class BackgroundSelftest:
    """One ``ladderlab selftest`` process started at most once; :meth:`result` waits for it."""

    def __init__(self, root: Path):
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="ladderlab-selftest-"))
        self.started = 0.0
        self.ended: float | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.proc is not None:
            return
        from ladderlab.environments.engine import connect
        from ladderlab.environments.images import build
        from tests.labs.test_selftest import selftest_command

        build(connect(), Settings.from_env(self.root), None, lambda _m: None)  # a no-op once setup built them
        self.started = time.monotonic()
        with open(self.dir / "stdout", "wb") as out, open(self.dir / "stderr", "wb") as err:
            self.proc = subprocess.Popen(selftest_command(), stdout=out, stderr=err, cwd=self.root,
                                         stdin=subprocess.DEVNULL)

    def wait(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=max(1.0, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        if self.ended is None:
            self.ended = time.monotonic()

    def result(self, timeout: float) -> BackgroundResult:
        self.start()
        self.wait(timeout)
        assert self.proc is not None and self.ended is not None
        return BackgroundResult(self.proc.returncode, (self.dir / "stdout").read_text(),
                                (self.dir / "stderr").read_text(errors="replace"), self.ended - self.started)

    def stop(self) -> None:
        """Interrupted: SIGINT (the self-test takes its environments down), then SIGKILL."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_BACKGROUND = pytest.StashKey[BackgroundSelftest]()
_WANTED = pytest.StashKey[bool]()


def _exclusive(item: pytest.Item) -> bool:
    path = Path(str(item.fspath)).resolve()
    return (item.get_closest_marker("exclusive") is not None or "browser" in path.name
            or path.is_relative_to(ROOT / "tests" / "tamper"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that need the machine to themselves first, the self-test's own tests last (stable)."""
    def phase(item: pytest.Item) -> int:
        if _exclusive(item):
            return 0
        return 2 if "selftest_all" in getattr(item, "fixturenames", ()) else 1

    items[:] = sorted(items, key=phase)
    config.stash[_WANTED] = any(phase(item) == 2 for item in items)
    config.stash[_BACKGROUND] = BackgroundSelftest(ROOT)


def pytest_runtest_setup(item: pytest.Item) -> None:
    background = item.config.stash.get(_BACKGROUND, None)
    if background is None:
        return
    if _exclusive(item):
        if background.running:  # only when the order above was overridden: the machine must be ours
            background.wait(timeout=3000)
    elif item.config.stash.get(_WANTED, False):
        background.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    background = session.config.stash.get(_BACKGROUND, None)
    if background is not None:
        background.stop()


@pytest.fixture(scope="session")
def background_selftest(request: pytest.FixtureRequest) -> BackgroundSelftest:
    return request.config.stash[_BACKGROUND]
