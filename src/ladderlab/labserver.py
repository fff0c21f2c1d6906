"""Starting JupyterLab: always on 127.0.0.1.

``ladderlab lab`` (:func:`run_workspace`) opens the learner's workspace: released notebooks only,
nbgrader's learner tools (Assignments: Fetch, Submit, Fetch Feedback) on and its instructor tools off,
and the grading service running in this process beside JupyterLab (stopped with it).
``ladderlab lab --author`` (:func:`run_author`) opens the course root itself, instructor tools on,
for lab authors.

Lab hosts sit on ``--internal`` Docker networks, which can still reach the
host's own addresses; binding the loopback address is what keeps every
ladderlab service on the host out of their reach (tests/integration/test_host_isolation.py).
The grading service listens on nothing: hand-ins travel through nbgrader's exchange directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ladderlab.config import Settings

LOOPBACK = "127.0.0.1"
Say = Callable[[str], None]


def jupyter_command(settings: Settings, port: int, token: str | None = None, root_dir: Path | None = None) -> list[str]:
    """The argv that starts JupyterLab on loopback, rooted at ``root_dir`` (default: the course)."""
    root = root_dir or settings.root
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.ip={LOOPBACK}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", "--no-browser", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # CI and single-user lab machines run as root
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    return argv


def run_author(settings: Settings, port: int, say: Say) -> int:
    argv = jupyter_command(settings, port)
    say(f"author mode: JupyterLab on the course root {settings.root}, instructor tools on: "
        f"http://{LOOPBACK}:{port}/ (Ctrl-C to stop)")
    os.execv(argv[0], argv)  # noqa: S606 - replaces this process with JupyterLab, argv built above
    return 0  # not reached


def workspace_environment(settings: Settings, workspace: Path, jupyter_config: Path, learner: str) -> dict[str, str]:
    """The JupyterLab process's environment: the learner's nbgrader config first, the course for kernels."""
    env = dict(os.environ)
    extra = [str(jupyter_config)] + [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env.update(JUPYTER_CONFIG_PATH=os.pathsep.join(extra), LADDERLAB_ROOT=str(settings.root),
               LADDERLAB_WORKSPACE=str(workspace), LADDERLAB_LEARNER=learner)
    return env


def prepare_workspace(settings: Settings, workspace: Path | None, say: Say) -> tuple[object, str, dict[str, str]]:
    """Release the labs, fill the workspace, write the learner's Jupyter config; (paths, learner, environment)."""
    from ladderlab.course.seeds import check_learner
    from ladderlab.lab import learner_id
    from ladderlab.service.handin import ensure_released
    from ladderlab.service.paths import ServicePaths
    from ladderlab.service.workspace import fill, learner_config

    paths = ServicePaths.of(settings, workspace)
    learner = check_learner(learner_id())
    course = ensure_released(settings, paths, say, skip_broken=True)
    published = [lab.id for lab in course.labs if lab.status == "published"]
    fill(paths, course.id, learner, published, say, start_here=settings.root / "start-here.ipynb")
    conf = learner_config(paths, course.id, learner)
    return paths, learner, workspace_environment(settings, paths.workspace, conf, learner)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_workspace(settings: Settings, port: int, say: Say, *, workspace: Path | None = None,
                  token: str | None = None, workers: int = 1) -> int:
    """JupyterLab on the learner's workspace with the grading service beside it; returns JupyterLab's exit code."""
    from ladderlab.service.paths import ServicePaths
    from ladderlab.service.queue import GradingService, ServiceLock

    paths, learner, env = prepare_workspace(settings, workspace, say)
    assert isinstance(paths, ServicePaths)
    lock = ServiceLock(paths.lock)
    service = None
    if lock.acquire():
        service = GradingService(settings, paths, workers=workers, say=say, prepare=True).start()
        say(f"grading service running ({workers} worker{'s' if workers > 1 else ''}; queue {paths.queue_db})")
    else:
        say(f"a grading service already runs for {settings.cache_dir} (pid in {paths.lock}): using it")
    argv = jupyter_command(settings, port, token, root_dir=paths.workspace)
    say(f"JupyterLab on your workspace {paths.workspace} as {learner}: http://{LOOPBACK}:{port}/ (Ctrl-C to stop)")
    # SIGTERM (kill, systemd, a test) stops like Ctrl-C: without this, Python dies at once and leaves
    # JupyterLab and its kernels running unowned, the port taken.
    signal.signal(signal.SIGTERM, _interrupt)
    proc = subprocess.Popen(argv, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        if service is not None:
            say("stopping the grading service")
            service.stop()
        lock.release()
