"""Starting JupyterLab for the course: always on 127.0.0.1.

Lab hosts sit on ``--internal`` Docker networks, which can still reach the
host's own addresses; binding the loopback address is what keeps every
ladderlab service on the host out of their reach (tests/integration/test_host_isolation.py).
"""

from __future__ import annotations

import os
import sys

from ladderlab.config import Settings

LOOPBACK = "127.0.0.1"


def jupyter_command(settings: Settings, port: int, token: str | None = None) -> list[str]:
    """The argv that starts JupyterLab on loopback, rooted at the course."""
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.ip={LOOPBACK}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", "--no-browser", f"--ServerApp.root_dir={settings.root}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # CI and single-user lab machines run as root
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    return argv
