"""The hidden reference of sys-3-tested-cli-tool and its mutants (graders/toolsmith.py judges with them).

Never copied anywhere a learner can read: only into a fresh, network-less container that a check starts for
one run of the learner's tests, and removes. ``__WARN_DAYS__`` and ``__TOOL__`` are filled per learner.
"""

from __future__ import annotations

from typing import NamedTuple

#: The tool: the documented API (classify, days_left, exit_code, check, main), nothing more.
TOOL = r'''"""Check when the TLS certificates of some endpoints expire (reference implementation)."""

import argparse
import datetime as dt
import importlib
import re
import socket
import ssl
import sys

DEFAULT_DAYS = __WARN_DAYS__
DEFAULT_TIMEOUT = 5.0
CODES = {"OK": 0, "EXPIRING": 1, "EXPIRED": 2, "BAD_CERT": 2, "UNREACHABLE": 3, "TIMEOUT": 3}
EXPIRED_CODE = 10  # X509_V_ERR_CERT_HAS_EXPIRED
FORMAT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def days_left(not_after, now):
    return int((not_after - now).total_seconds() // 86400)


def classify(not_after, now, days):
    if not_after <= now:
        return "EXPIRED"
    if days_left(not_after, now) < days:
        return "EXPIRING"
    return "OK"


def exit_code(results):
    return max((CODES[r["status"]] for r in results), default=0)


def parse_target(target):
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"bad target {target!r}: expected host:port")
    return host, int(port)


def not_after_of(tls):
    stamp = ssl.cert_time_to_seconds(tls.getpeercert()["notAfter"])
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc)


def check(target, days, timeout, cafile=None, now=None):
    host, port = parse_target(target)
    context = ssl.create_default_context(cafile=cafile)
    result = {"target": target, "status": "UNREACHABLE", "days_left": None}
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                not_after = not_after_of(tls)
    except ssl.SSLCertVerificationError as exc:
        result["status"] = "EXPIRED" if exc.verify_code == EXPIRED_CODE else "BAD_CERT"
        return result
    except (socket.timeout, TimeoutError):
        result["status"] = "TIMEOUT"
        return result
    except (OSError, ValueError):
        return result
    now = now or dt.datetime.now(dt.timezone.utc)
    result["status"] = classify(not_after, now, days)
    if result["status"] != "EXPIRED":
        result["days_left"] = days_left(not_after, now)
    return result


def load_format(name):
    if not FORMAT_NAME.match(name):
        raise UsageError(f"bad format name {name!r}")
    try:
        return importlib.import_module(f"formats.{name}")
    except ModuleNotFoundError:
        raise UsageError(f"unknown format {name!r}") from None


def main(argv=None):
    parser = Parser(prog="__TOOL__", description=__doc__)
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--cafile")
    parser.add_argument("--format", default="text")
    parser.add_argument("targets", nargs="*")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if not args.targets:
            raise UsageError("give at least one target host:port")
        for target in args.targets:
            parse_target(target)
        render = load_format(args.format).render
    except UsageError as exc:
        print(f"__TOOL__: {exc}", file=sys.stderr)
        return 4
    results = [check(t, args.days, args.timeout, args.cafile) for t in args.targets]
    print(render(results))
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
'''

#: formats/text.py and formats/json.py.
TEXT_FORMAT = r'''"""One line per target: <target> <STATUS> <days left, or ->."""


def render(results):
    return "\n".join(
        f"{r['target']} {r['status']} {'-' if r['days_left'] is None else r['days_left']}" for r in results)
'''

JSON_FORMAT = r'''"""A JSON array of {"target", "status", "days_left"} objects, in target order."""

import json


def render(results):
    return json.dumps([{"target": r["target"], "status": r["status"], "days_left": r["days_left"]}
                       for r in results])
'''


class Mutant(NamedTuple):
    """One plausible slip: ``old`` (found exactly once in ``path`` of the reference) becomes ``new``."""

    id: str
    path: str  # "tool", "formats/text.py" or "formats/json.py"
    old: str
    new: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant("expired-boundary", "tool", "if not_after <= now:", "if not_after < now:"),
    Mutant("threshold-inclusive", "tool", "if days_left(not_after, now) < days:",
           "if days_left(not_after, now) <= days:"),
    Mutant("days-rounded", "tool", "int((not_after - now).total_seconds() // 86400)",
           "round((not_after - now).total_seconds() / 86400)"),
    Mutant("exit-code-of-last", "tool", 'max((CODES[r["status"]] for r in results), default=0)',
           'CODES[results[-1]["status"]] if results else 0'),
    Mutant("timeout-as-unreachable", "tool", 'result["status"] = "TIMEOUT"', 'result["status"] = "UNREACHABLE"'),
    Mutant("bad-cert-as-unreachable", "tool", 'exc.verify_code == EXPIRED_CODE else "BAD_CERT"',
           'exc.verify_code == EXPIRED_CODE else "UNREACHABLE"'),
    Mutant("expired-as-bad-cert", "tool", '"EXPIRED" if exc.verify_code == EXPIRED_CODE', '"BAD_CERT" if True'),
    Mutant("days-option-ignored", "tool", "check(t, args.days, args.timeout, args.cafile)",
           "check(t, DEFAULT_DAYS, args.timeout, args.cafile)"),
    Mutant("usage-exit-2", "tool", "        return 4\n", "        return 2\n"),
    Mutant("json-days-as-text", "formats/json.py", '"days_left": r["days_left"]',
           '"days_left": None if r["days_left"] is None else str(r["days_left"])'),
)


def sources(tool: str, warn_days: int, mutant: Mutant | None = None) -> dict[str, str]:
    """The reference's files (relative path -> text) for ``tool`` with default threshold ``warn_days``,
    with ``mutant`` applied. ValueError when a mutant's ``old`` is not found exactly once (a defect of ours)."""
    files = {f"{tool}.py": TOOL.replace("__WARN_DAYS__", str(int(warn_days))).replace("__TOOL__", tool),
             "formats/text.py": TEXT_FORMAT, "formats/json.py": JSON_FORMAT}
    if mutant is not None:
        path = f"{tool}.py" if mutant.path == "tool" else mutant.path
        if files[path].count(mutant.old) != 1:
            raise ValueError(f"mutant {mutant.id}: {mutant.old!r} is not in {path} exactly once")
        files[path] = files[path].replace(mutant.old, mutant.new)
    return files
