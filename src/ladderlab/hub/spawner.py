"""The hub's spawner (docs/hub-design.md, 2.1): each learner's server is a local process, started by the hub
(root) through :mod:`ladderlab.hub.jail`, which drops it to the learner's own account ``ll-<id>`` in a mount
namespace where the course checkout, the cache and the Docker engine's socket are hidden. The hub never
runs a learner's code as the hub's user, or as any account ladderlab did not make for that learner."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import List, Unicode

from ladderlab.hub import accounts


class LadderlabSpawner(LocalProcessSpawner):  # type: ignore[misc]
    home_root = Unicode(help="where the learners' homes are (<root>/home)").tag(config=True)
    hide = List(Unicode(), help="paths the learner's server must not reach").tag(config=True)
    expose = List(Unicode(), help="directories inside hidden ones, shown read-only").tag(config=True)
    server_command = List(Unicode(), default_value=["jupyterhub-singleuser"],
                          help="the server, run as the learner inside the jail").tag(config=True)
    released_from = Unicode("", help="nbgrader's outbound exchange of the course: the released labs").tag(config=True)
    released_labs = List(Unicode(), help="the labs handed to each learner's home").tag(config=True)
    start_here = Unicode("", help="the course's start-here.ipynb, handed out too").tag(config=True)
    course_file = Unicode("", help="the course.yaml whose published labs are handed out, read at each start "
                                   "(released_labs when it cannot be read)").tag(config=True)

    _started_as: accounts.Account | None = None

    def _account(self) -> accounts.Account:
        """The learner's account, made (or checked) once per start."""
        if self._started_as is None:
            self._started_as = accounts.ensure(self.user.name, Path(self.home_root))
        return self._started_as

    def jail_command(self, account: accounts.Account, command: list[str] | None = None) -> list[str]:
        """The jail for ``account`` around ``command`` (the server by default)."""
        args = [sys.executable, "-m", "ladderlab.hub.jail", "--user", account.name]
        for path in self.hide:
            if Path(path).exists() or Path(path).is_symlink():
                args += ["--hide", path]
        for path in self.expose:
            args += ["--expose", path]
        return [*args, "--", *(command or self.server_command)]

    def hand_out(self, account: accounts.Account) -> None:
        """The released labs and the start page into the learner's home, placed by the learner's own process in
        the jail (:mod:`ladderlab.hub.workspace`; ``-I``: nothing of the learner's home is imported). A failure is
        logged and the server starts anyway: the learner's work is in their home whatever the hand-out did."""
        from ladderlab.hub import workspace

        if not self.released_from:
            return
        labs = list(self.released_labs)
        if self.course_file:
            from ladderlab.hub.config import published

            try:
                labs = published(Path(self.course_file))
            except Exception as exc:
                self.log.warning("course %s not read (%r): handing out the labs published when the hub started",
                                 self.course_file, str(exc)[:300])
        notebooks = workspace.released(Path(self.released_from), labs,
                                       Path(self.start_here) if self.start_here else None)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        command = self.jail_command(account, [sys.executable, "-I", "-m", "ladderlab.hub.workspace"])
        try:
            done = workspace.hand_out(command, notebooks, env=env)
            changed = {k: v for k, v in done.items() if v != "kept"}
            self.log.info("workspace of %s: %d notebook(s), %r", account.learner, len(done), changed or "all kept")
        except Exception as exc:
            self.log.warning("workspace of %s not handed out: %r", account.learner, str(exc)[:500])

    def make_preexec_fn(self, name: str) -> None:
        """Nothing: the jail starts as root and drops to the learner's account itself (after mounting)."""
        return None

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        account = self._account()
        env.update(USER=account.name, LOGNAME=account.name, HOME=str(account.home))
        env.pop("SHELL", None)
        return env

    async def start(self) -> Any:
        self._started_as = None  # each start checks the account again (it may have been removed meanwhile)
        account = self._account()
        await asyncio.get_running_loop().run_in_executor(None, self.hand_out, account)
        self.cmd = self.jail_command(account)
        return await super().start()
