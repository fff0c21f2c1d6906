"""The jail a learner's server starts in on a hub (docs/hub-design.md, 2.1 and 4).

``python -m ladderlab.hub.jail --user ll-ada --hide DIR --hide SOCKET --expose DIR/sub -- CMD ...`` runs as root,
and before it execs ``CMD`` as the learner:

1. enters a mount namespace of its own (``unshare(CLONE_NEWNS)``, ``/`` made recursively private, so nothing it
   mounts reaches the machine's namespace and the machine's later mounts stay out too);
2. covers each ``--hide`` path: a directory with an empty tmpfs (mode 000, or 0711 and read-only when it holds
   ``--expose`` paths), a file or a socket with ``/dev/null``;
3. shows each ``--expose`` path (a directory inside a hidden one, e.g. the checkout's ``.venv`` and ``src``)
   again, read-only, from a handle opened before the hiding;
4. sets ``no_new_privs`` (a setuid binary cannot give root back), drops to the account (its groups, gid, uid),
   checks that root cannot be regained, and execs ``CMD`` with HOME, USER and LOGNAME set.

Only accounts ladderlab made for learners (``ll-*`` in ``ladderlab-learners``) are accepted. Kernels the server
starts inherit the namespace and the uid. A failing step stops the start: nothing runs half-jailed.
"""

from __future__ import annotations

import argparse
import ctypes
import grp
import os
import pwd
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ladderlab.hub.accounts import GROUP, PREFIX

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38


class JailError(Exception):
    """The jail cannot be set up as asked: nothing is started."""


@dataclass(frozen=True)
class Plan:
    user: str
    hide: tuple[Path, ...]
    expose: tuple[Path, ...]
    command: tuple[str, ...]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _call(what: str, rc: int) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise JailError(f"{what}: {os.strerror(err)}")


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None, *, what: str = "") -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None
    _call(f"mount {target} ({what or fstype or 'remount'})",
          libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)))


def check_plan(plan: Plan) -> pwd.struct_passwd:
    """Refuse what must never run: not root, an account that is not a learner's, a missing or nested path."""
    if os.geteuid() != 0:
        raise JailError("the jail must start as root (it mounts, then drops to the learner's account)")
    try:
        account = pwd.getpwnam(plan.user)
    except KeyError:
        raise JailError(f"--user {plan.user!r}: no such account") from None
    try:
        group = grp.getgrnam(GROUP).gr_gid
    except KeyError:
        raise JailError(f"--user {plan.user!r}: the group {GROUP} does not exist") from None
    if not plan.user.startswith(PREFIX) or account.pw_gid != group or account.pw_uid == 0:
        raise JailError(f"--user {plan.user!r} is not a learner account ({PREFIX}<id> in the group {GROUP})")
    if not plan.command:
        raise JailError("no command to run (put it after --)")
    for path in plan.hide:
        if not path.is_absolute() or not os.path.lexists(path):
            raise JailError(f"--hide {path}: not an existing absolute path")
    for a in plan.hide:
        for b in plan.hide:
            if a != b and b.is_relative_to(a):
                raise JailError(f"--hide {b} is inside --hide {a}: hide the outer one only")
    for path in plan.expose:
        if not path.is_dir():
            raise JailError(f"--expose {path}: not an existing directory")
        if not any(path != h and path.is_relative_to(h) and Path(h).is_dir() for h in plan.hide):
            raise JailError(f"--expose {path}: not inside a hidden directory")
    return account


def enter(plan: Plan) -> None:
    """Set the jail up in this process and exec the command (never returns)."""
    account = check_plan(plan)
    libc = _libc()
    _call("unshare(CLONE_NEWNS)", libc.unshare(CLONE_NEWNS))
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    # Handles on what is shown again, opened in this namespace (a bind from another namespace's mount is refused)
    # and before the hiding covers it.
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in plan.expose}
    for hidden in plan.hide:
        inside = sorted((p for p in plan.expose if p.is_relative_to(hidden)), key=lambda p: len(p.parts))
        mode = os.lstat(hidden).st_mode
        if stat.S_ISDIR(mode):
            _mount(libc, "tmpfs", str(hidden), "tmpfs", MS_NOSUID | MS_NODEV,
                   f"mode={'0711' if inside else '000'},size=64k")
            for path in inside:
                point = hidden
                for part in path.relative_to(hidden).parts:
                    point = point / part
                    if not point.exists():
                        point.mkdir(mode=0o711)
                _mount(libc, f"/proc/self/fd/{handles[path]}", str(path), None, MS_BIND, what="bind")
                _mount(libc, None, str(path), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                       what="read-only")
            if inside:
                _mount(libc, None, str(hidden), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0711")
        else:
            _mount(libc, "/dev/null", str(hidden), None, MS_BIND)
    for fd in handles.values():
        os.close(fd)
    _call("prctl(PR_SET_NO_NEW_PRIVS)", libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - only a broken kernel or libc gets here
        raise JailError("root could be regained after dropping privileges")
    if set(os.getresuid()) != {account.pw_uid} or set(os.getresgid()) != {account.pw_gid}:
        raise JailError("the ids did not drop completely")  # pragma: no cover
    env = dict(os.environ, HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    try:
        os.chdir(account.pw_dir)
    except OSError:
        os.chdir("/")
    os.execvpe(plan.command[0], list(plan.command), env)  # noqa: S606 - the jail's job: become the learner's server


def parse(argv: Sequence[str]) -> Plan:
    args = list(argv)
    command: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m ladderlab.hub.jail", description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", required=True, help="the learner's account (ll-<id>)")
    parser.add_argument("--hide", action="append", default=[], metavar="PATH",
                        help="a directory, file or socket the learner must not reach (repeatable)")
    parser.add_argument("--expose", action="append", default=[], metavar="DIR",
                        help="a directory inside a hidden one, shown read-only (repeatable)")
    ns = parser.parse_args(args)
    return Plan(ns.user, tuple(Path(os.path.realpath(p)) for p in ns.hide),
                tuple(Path(os.path.realpath(p)) for p in ns.expose), tuple(command))


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse(sys.argv[1:] if argv is None else argv)
    try:
        enter(plan)
    except (JailError, OSError) as exc:
        print(f"ladderlab jail: {exc}; nothing was started", file=sys.stderr)
        return 2
    return 0  # pragma: no cover - enter() execs


if __name__ == "__main__":
    sys.exit(main())
