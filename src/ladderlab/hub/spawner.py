"""The hub's spawner (docs/hub-design.md, 2.1): each learner's server is a local process, started by the hub
(root) through :mod:`ladderlab.hub.jail`, which drops it to the learner's own account ``ll-<id>`` in a mount
namespace where the course checkout, the cache and the Docker engine's socket are hidden. The hub never
runs a learner's code as the hub's user, or as any account ladderlab did not make for that learner."""

from __future__ import annotations

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

    _started_as: accounts.Account | None = None

    def _account(self) -> accounts.Account:
        """The learner's account, made (or checked) once per start."""
        if self._started_as is None:
            self._started_as = accounts.ensure(self.user.name, Path(self.home_root))
        return self._started_as

    def jail_command(self, account: accounts.Account) -> list[str]:
        args = [sys.executable, "-m", "ladderlab.hub.jail", "--user", account.name]
        for path in self.hide:
            if Path(path).exists() or Path(path).is_symlink():
                args += ["--hide", path]
        for path in self.expose:
            args += ["--expose", path]
        return [*args, "--", *self.server_command]

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
        self.cmd = self.jail_command(self._account())
        return await super().start()
