"""configurable-http-proxy, the hub's proxy, from the npm registry (the machine's node and npm)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError

VERSION = "5.3.0"


ENV = "LADDERLAB_HUB_PROXY"


def installed(settings: Settings) -> Path:
    """Where ``ensure`` installs the proxy: under the cache."""
    return settings.cache_dir / "hub" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"


def path(settings: Settings) -> Path:
    """The proxy the hub runs: $LADDERLAB_HUB_PROXY (one installed elsewhere, e.g. ``npm install -g``), else the
    one ``ensure`` installed."""
    explicit = os.environ.get(ENV)
    return Path(explicit) if explicit else installed(settings)


def ensure(settings: Settings, say: Callable[[str], None]) -> Path:
    """The proxy's command; installed with npm under the cache when missing."""
    if path(settings).exists():
        return path(settings)
    found = installed(settings)
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        raise LadderlabError("the hub's proxy needs Node.js and npm: install them (apt-get install nodejs npm), "
                             "then run `ladderlab setup --hub` again")
    prefix = settings.cache_dir / "hub" / "node"
    prefix.mkdir(parents=True, exist_ok=True)
    say(f"installing configurable-http-proxy {VERSION} with npm into {prefix}")
    result = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
                             f"configurable-http-proxy@{VERSION}"], capture_output=True, text=True, timeout=600,
                            check=False)
    if result.returncode != 0 or not found.exists():
        raise LadderlabError(f"npm install configurable-http-proxy@{VERSION} failed (exit {result.returncode}): "
                             f"{(result.stderr or result.stdout).strip()[-400:]}")
    return found
