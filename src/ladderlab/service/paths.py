"""Where the service keeps things.

==========================  ==================================================  =============================
path                        what                                                default
==========================  ==================================================  =============================
workspace                   the learner's JupyterLab root: start-here.ipynb     ``$LADDERLAB_WORKSPACE`` or
                            and one released notebook per lab, nothing else     ``<course root>/workspace``
service/course/             the instructor's nbgrader course root (sources,     ``<cache>/service``
                            release, submitted, autograded, feedback, gradebook)
service/exchange/           nbgrader's exchange: outbound, inbound, feedback
service/jupyter/            the learner server's Jupyter config (nbgrader exchange, disabled instructor tools)
service/queue.db            the Huey queue (SQLite)
service/ledger.db           one row per submission version (SQLite)
service/logs/               one log file per graded submission
==========================  ==================================================  =============================

The workspace lives beside the course (``make clean`` keeps it); everything else is cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ladderlab.config import Settings


@dataclass(frozen=True)
class ServicePaths:
    settings: Settings
    workspace: Path

    @classmethod
    def of(cls, settings: Settings, workspace: Path | None = None) -> ServicePaths:
        raw = os.environ.get("LADDERLAB_WORKSPACE")
        chosen = workspace or (Path(raw) if raw else settings.root / "workspace")
        return cls(settings, chosen.resolve())

    @property
    def base(self) -> Path:
        return self.settings.cache_dir / "service"

    @property
    def course_root(self) -> Path:
        return self.base / "course"

    @property
    def exchange(self) -> Path:
        return self.base / "exchange"

    @property
    def learner_cache(self) -> Path:
        return self.base / "learner-cache"

    @property
    def jupyter_config(self) -> Path:
        return self.base / "jupyter"

    @property
    def queue_db(self) -> Path:
        return self.base / "queue.db"

    @property
    def ledger_db(self) -> Path:
        return self.base / "ledger.db"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def lock(self) -> Path:
        """Held (flock) by the process that runs the grading workers."""
        return self.base / "service.lock"

    @property
    def releases(self) -> Path:
        """What was released per lab (digest of the released notebook)."""
        return self.base / "releases.json"

    @property
    def fetched(self) -> Path:
        """What was put in the workspace per lab (digest of the file as written), to tell untouched from started."""
        return self.base / "workspace.json"
