"""The hub's PostgreSQL (docs/hub-design.md, 2.5): the evidence record, nbgrader's gradebook and the grading queue
on one server that ``ladderlab hub start`` runs for as long as the hub runs.

The server is the machine's own PostgreSQL (Debian's ``postgresql``: ``ladderlab setup --hub`` installs it when it
is missing), run as the ``postgres`` account on a data directory of its own, ``<root>/postgres/data``. It listens
on a unix socket only (``listen_addresses=''``), in ``<root>/postgres/run``; ``<root>/postgres`` is 0700 and the
``postgres`` account's, so the socket is reachable by root (the hub's service, which grades and records) and by
no learner: that directory is the access control, and the cluster trusts whoever reaches its socket. A learner's
server is jailed besides (the directory is hidden in the jail, :func:`ladderlab.hub.config.jail_view`).

Three databases, each named for what it holds, reach the service as the variables every part of ladderlab
already reads: ``LADDERLAB_LADDER_URL`` (the evidence record, :mod:`ladderlab.ladder.store`),
``LADDERLAB_GRADEBOOK_URL`` (nbgrader's gradebook, :func:`ladderlab.grading.nbgrader_ext.gradebook_url`) and
``LADDERLAB_QUEUE_URL`` (Huey's SQL storage, :mod:`ladderlab.service.queue`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError

#: The databases of a hub, and the variable that names each for the service.
DATABASES = {"ladder": "LADDERLAB_LADDER_URL", "gradebook": "LADDERLAB_GRADEBOOK_URL", "queue": "LADDERLAB_QUEUE_URL"}

#: The cluster's superuser (``initdb -U``): the service connects as it, through the socket only.
ROLE = "ladder"

ACCOUNT = "postgres"


def binary(name: str) -> str:
    """PostgreSQL's ``name`` (initdb, pg_ctl, postgres): on PATH, else Debian's ``/usr/lib/postgresql/N/bin``,
    the newest N."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   key=_version, reverse=True)), None)
    if not found:
        raise LadderlabError(f"PostgreSQL's {name} is not on this machine: run `ladderlab setup --hub` "
                             "(it installs Debian's postgresql), or apt-get install postgresql")
    return found


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def installed() -> bool:
    try:
        pwd.getpwnam(ACCOUNT)
        for name in ("initdb", "pg_ctl", "postgres"):
            binary(name)
    except (KeyError, LadderlabError):
        return False
    return True


def ensure(settings: Settings, say: Callable[[str], None]) -> str:
    """PostgreSQL's server, installed from Debian's packages when missing (root with apt); its ``postgres``."""
    if not installed():
        from ladderlab.environments.engine import _can_install, apt_install

        if not _can_install():
            raise LadderlabError("the hub keeps its records in PostgreSQL, which is not installed: "
                                 "apt-get install postgresql, then run `ladderlab setup --hub` again")
        apt_install(["postgresql"], settings, say)
        if not installed():
            raise LadderlabError("postgresql was installed but its server or its postgres account is missing")
    return binary("postgres")


class HubDatabase:
    """The hub's cluster under ``base`` (``<root>/postgres``): :meth:`start` it, read :meth:`urls`, :meth:`stop`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.created: list[str] = []  # the databases the last start made (new, empty)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def socket(self) -> Path:
        return self.socket_dir / ".s.PGSQL.5432"

    def sqlalchemy_url(self, name: str) -> str:
        """Database ``name`` for SQLAlchemy, over the socket with pg8000 (the driver the project already has)."""
        return f"postgresql+pg8000://{ROLE}@/{name}?unix_sock={quote(str(self.socket), safe='/')}"

    def urls(self) -> dict[str, str]:
        """The variable → URL of each database, over the socket."""
        out = {}
        for name, var in DATABASES.items():
            if var == "LADDERLAB_QUEUE_URL":  # Huey's SQL storage is peewee's: psycopg2, libpq's URL form
                out[var] = f"postgresql://{ROLE}@/{name}?host={quote(str(self.socket_dir), safe='/')}"
            else:
                out[var] = self.sqlalchemy_url(name)
        return out

    def _as_postgres(self, cmd: list[str], what: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", ACCOUNT, "--"] if os.geteuid() == 0 else []
        try:
            result = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise LadderlabError(f"the hub's PostgreSQL: {what} did not finish in {timeout:g} s (its log: "
                                 f"{self.log})") from None
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise LadderlabError(f"the hub's PostgreSQL: {what} failed (exit {result.returncode}): "
                                 f"{(result.stderr or result.stdout).strip()[-800:]}"
                                 + (f"\nits log ({self.log}):\n{tail}" if tail else ""))

    def _prepare(self) -> None:
        try:
            account = pwd.getpwnam(ACCOUNT)
        except KeyError:
            raise LadderlabError("the hub's PostgreSQL runs as the postgres account, which this machine does not "
                                 "have: run `ladderlab setup --hub`") from None
        for d in (self.base, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(d, account.pw_uid, account.pw_gid)
            d.chmod(0o700)

    def running(self) -> bool:
        """Whether the cluster's server runs (its ``postmaster.pid`` names a live process)."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        except PermissionError:  # a process of another user's, or a data directory only postgres may read
            return True
        return True

    def start(self, say: Callable[[str], None]) -> dict[str, str]:
        """Create the cluster the first time, start it (a server a killed hub left running is kept), create the
        databases that are missing; the URLs."""
        self._prepare()
        if not (self.data / "PG_VERSION").exists():
            say(f"creating the hub's PostgreSQL cluster in {self.data}")
            self._as_postgres([binary("initdb"), "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8",
                               "--no-instructions"], "initdb")
        if self.running():
            say(f"the hub's PostgreSQL is already running ({self.data}): keeping it")
        else:
            options = f"-k {shlex.quote(str(self.socket_dir))} -c listen_addresses='' -c unix_socket_permissions=0700"
            self._as_postgres([binary("pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                               "-o", options], "pg_ctl start")
        try:
            self._create_databases()
        except Exception as exc:
            self.stop()  # never a server left running by a start that failed
            raise LadderlabError(f"the hub's PostgreSQL ({self.data}) started but its databases could not be made: "
                                 f"{type(exc).__name__}: {exc}") from exc
        return self.urls()

    def _connect(self, database: str = "postgres") -> Any:
        import pg8000.native  # type: ignore[import-untyped]

        return pg8000.native.Connection(ROLE, unix_sock=str(self.socket), database=database)

    def _create_databases(self) -> None:
        conn = self._connect()
        try:
            have = {row[0] for row in conn.run("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in have:
                    conn.run(f'CREATE DATABASE "{name}"')  # names from DATABASES only
                    self.created.append(name)
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the server (fast: open transactions are rolled back; what was committed stays)."""
        if self.running():
            self._as_postgres([binary("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60"],
                              "pg_ctl stop")


#: Where ``hub start`` notes the hub's root in the cache: ladderlab's commands on that cache (``ladder``, ``cohort
#: status``, ``cohort record-rubric``...) then read the hub's PostgreSQL, not the cache's SQLite files.
MARKER = "hub-database.json"


def remember(settings: Settings, root: Path) -> None:
    """Note in the cache that its records live in the PostgreSQL of the hub at ``root``."""
    import json

    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    path = settings.cache_dir / MARKER
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"root": str(root)}))
    tmp.replace(path)


def forget(settings: Settings) -> None:
    """The cache's records are not (all) in a hub's own database: no note."""
    (settings.cache_dir / MARKER).unlink(missing_ok=True)


def remembered(settings: Settings) -> HubDatabase | None:
    """The hub's database the cache's records live in (``hub start`` noted it), when there is one."""
    import json

    from ladderlab.errors import UsageError

    path = settings.cache_dir / MARKER
    try:
        root = Path(json.loads(path.read_text())["root"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    db = HubDatabase(root / "postgres")
    try:
        return db if (db.data / "PG_VERSION").exists() else None
    except PermissionError:  # not root: the data directory is postgres's
        raise UsageError(f"the records of {settings.cache_dir} are in the hub's PostgreSQL ({db.data}), which only "
                         f"root reaches: run this as root") from None
