"""The system accounts a hub's learners' servers run as (docs/hub-design.md, 2.1).

A roster id ``ada`` runs as ``ll-ada`` in the group ``ladderlab-learners``, home ``<home_root>/ada`` (0700),
no login shell. The ``ll-`` prefix is not decoration: a roster id ``root`` or ``postgres`` must never name the
account a learner's code runs as. Only accounts in the learners' group are ever removed.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ladderlab.errors import LadderlabError, UsageError

GROUP = "ladderlab-learners"
PREFIX = "ll-"
#: A roster id a hub accepts (JupyterHub's ``Authenticator.username_pattern`` uses the same).
ID_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,29}")
NOLOGIN = "/usr/sbin/nologin"


class AccountError(LadderlabError, RuntimeError):
    """Creating or removing a learner's account failed (the system tool's message is kept)."""

    exit_code = 4


@dataclass(frozen=True)
class Account:
    learner: str
    name: str
    uid: int
    gid: int
    home: Path


def account_name(learner: str) -> str:
    """``ll-<id>`` for a valid roster id; anything else is refused (names the id and the rule)."""
    if not isinstance(learner, str) or not ID_PATTERN.fullmatch(learner):
        raise UsageError(f"learner id {learner!r} is not usable as an account: lower-case letters, digits and '-', "
                         f"starting with a letter, at most 30 characters")
    return PREFIX + learner


def _tool(name: str) -> str:
    """useradd and friends, by path (in /usr/sbin, which a non-login PATH may lack)."""
    from ladderlab.environments.hostguard import admin_tool

    found = admin_tool(name)
    if not found:
        raise AccountError(f"{name} is not installed (Debian's passwd package provides it)")
    return found


def _run(argv: list[str]) -> None:
    argv = [_tool(argv[0]), *argv[1:]]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AccountError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[:300]}")


def ensure_group() -> int:
    """The learners' group (created once, a system group); its gid."""
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        _run(["groupadd", "--system", GROUP])
        return grp.getgrnam(GROUP).gr_gid


def lookup(learner: str) -> Account | None:
    """The learner's account, or None when there is none. An account of that name outside the learners'
    group is an error: it was not made by ladderlab, and a learner must never run as it."""
    name = account_name(learner)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    gid = ensure_group()
    if entry.pw_gid != gid:
        raise AccountError(f"account {name} exists but its primary group is not {GROUP}: it is not a learner "
                           f"account ladderlab made; rename or remove it")
    return Account(learner, name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def ensure(learner: str, home_root: Path) -> Account:
    """The learner's account, created when missing; its home ``home_root/<id>`` exists, is theirs, 0700."""
    name = account_name(learner)
    gid = ensure_group()
    account = lookup(learner)
    home = Path(home_root) / learner
    if account is None:
        Path(home_root).mkdir(parents=True, exist_ok=True)
        _run(["useradd", "--system", "--gid", str(gid), "--home-dir", str(home), "--no-create-home",
              "--shell", NOLOGIN, "--comment", f"ladderlab learner {learner}", name])
        account = lookup(learner)
        assert account is not None
    elif account.home != home:
        raise AccountError(f"account {name} has home {account.home}, not {home}")
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, account.uid, account.gid)
    home.chmod(0o700)
    return account


def remove(learner: str) -> bool:
    """Remove the learner's account (never its home: its work stays for the trainer). False: there was none."""
    account = lookup(learner)
    if account is None:
        return False
    _run(["userdel", account.name])
    return True
