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

A fourth, ``judging``, holds the hand-ins that graders on other machines judge (:mod:`ladderlab.service.judging`,
docs/hub-design.md 2.9). Only with ``hub start --graders-listen ADDR --graders-from CIDR`` (:class:`GraderAccess`)
does the server also listen on ``ADDR``, a private address of the hub machine; ``pg_hba.conf`` (rewritten at each
start, and reloaded into a server a killed hub left running) then rejects connections from ``ADDR`` itself (this
machine's own processes, learners' among them) and lets in one role over the network, ``grader``, from ``CIDR``
only, to the ``judging`` database only, with a ``scram-sha-256`` password kept in
``<root>/postgres/grader-password``; that role may read the judging table and write a claim's columns, and nothing
else. Without it, the server listens on no address (a kept server listening elsewhere is restarted) and the role
may not log in.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError, UsageError

#: The databases of a hub, and the variable that names each for the service.
DATABASES = {"ladder": "LADDERLAB_LADDER_URL", "gradebook": "LADDERLAB_GRADEBOOK_URL", "queue": "LADDERLAB_QUEUE_URL"}

#: The cluster's superuser (``initdb -U``): the service connects as it, through the socket only.
ROLE = "ladder"

ACCOUNT = "postgres"

#: The graders' database (not a record: no variable, the service is told of it only when graders may connect),
#: and their role.
JUDGING = "judging"
GRADER_ROLE = "grader"
#: The judging table's columns a grader may write: its claim's (never the hand-in's key, learner, lab or notebook).
CLAIM_COLUMNS = ("status", "grader", "beat", "attempts", "report", "graded", "error")
#: The server's port: its socket's name, and where graders connect.
PORT = 5432


@dataclass(frozen=True)
class GraderAccess:
    """Graders on other machines reach the hub's PostgreSQL on ``listen`` (a private address of this machine, never
    a wildcard), port :data:`PORT`, from the network ``allow`` (CIDR) only."""

    listen: str
    allow: str

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.listen)
        except ValueError:
            raise UsageError(f"--graders-listen: expected one IP address of this machine, got {self.listen!r}") \
                from None
        if address.is_unspecified:
            raise UsageError(f"--graders-listen {self.listen}: a wildcard would listen on every address, lab "
                             f"networks' gateways among them; give the private address the graders reach")
        try:
            network = ipaddress.ip_network(self.allow, strict=False)
        except ValueError:
            raise UsageError(f"--graders-from: expected the grading machines' network (CIDR, e.g. 10.0.5.0/24), "
                             f"got {self.allow!r}") from None
        if network.prefixlen == 0:
            raise UsageError(f"--graders-from {self.allow}: that is every address; name the grading machines' "
                             f"network")


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
    def grader_password_file(self) -> Path:
        return self.base / "grader-password"

    @property
    def hba(self) -> Path:
        return self.data / "pg_hba.conf"

    @property
    def socket(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{PORT}"

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

    @property
    def graders_file(self) -> Path:
        return self.base / "graders.json"

    def grader_url(self) -> str:
        """What a grading machine's ``ladderlab service grader`` is given (it holds the password): the graders'
        address of the last start, which must have been given one."""
        try:
            access = json.loads(self.graders_file.read_text())
            password = self.grader_password_file.read_text().strip()
        except (OSError, ValueError):
            raise UsageError(f"the hub on {self.base.parent} was not started for graders on other machines: start "
                             f"it with --graders-listen ADDR --graders-from CIDR") from None
        listen = access["listen"]
        host = f"[{listen}]" if ":" in listen else listen
        return f"postgresql+pg8000://{GRADER_ROLE}:{password}@{host}:{PORT}/{JUDGING}"

    def _write_hba(self, graders: GraderAccess | None) -> None:
        """Who may log in: root and postgres through the socket (its directory is the access control); over the
        network, the grader role from the graders' network to the judging database with a password, and no one
        else (initdb's own file trusts 127.0.0.1, which lab hosts reach)."""
        lines = ["# Written by `ladderlab hub start` at each start: edits are lost.",
                 "local all all trust"]
        if graders is not None:
            network = ipaddress.ip_network(graders.allow, strict=False)
            own = ipaddress.ip_network(graders.listen)  # a connection from this machine to ADDR comes from ADDR:
            lines.append(f"host all all {own} reject")  # learners' processes here are not graders
            lines.append(f"host {JUDGING} {GRADER_ROLE} {network} scram-sha-256")
        self.hba.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            account = pwd.getpwnam(ACCOUNT)
            os.chown(self.hba, account.pw_uid, account.pw_gid)
        self.hba.chmod(0o600)

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

    def start(self, say: Callable[[str], None], graders: GraderAccess | None = None) -> dict[str, str]:
        """Create the cluster the first time, start it (a server a killed hub left running is kept), create the
        databases that are missing; the URLs. With ``graders``, it also listens where graders reach it."""
        self._prepare()
        if not (self.data / "PG_VERSION").exists():
            say(f"creating the hub's PostgreSQL cluster in {self.data}")
            self._as_postgres([binary("initdb"), "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8",
                               "--no-instructions"], "initdb")
        self._write_hba(graders)
        if graders is None:
            self.graders_file.unlink(missing_ok=True)
        else:
            self.graders_file.write_text(json.dumps({"listen": graders.listen, "allow": graders.allow}) + "\n")
        listen = graders.listen if graders is not None else ""
        if not self.running():
            self._launch(listen)
        else:  # a server a killed hub left: kept when it listens where this start wants, with the new rules
            try:
                found = self._listening()
            except Exception:  # one that does not answer is started again
                found = None
            if found == listen:
                say(f"the hub's PostgreSQL is already running ({self.data}): keeping it")
                self._as_postgres([binary("pg_ctl"), "reload", "-D", str(self.data)], "pg_ctl reload")
            else:
                say(f"the hub's PostgreSQL is already running ({self.data}) but listens on {found or 'its socket'}, "
                    f"not {listen or 'its socket only'}: restarting it")
                self.stop()
                self._launch(listen)
        try:
            self._create_databases()
            self._prepare_judging(graders)
        except Exception as exc:
            self.stop()  # never a server left running by a start that failed
            raise LadderlabError(f"the hub's PostgreSQL ({self.data}) started but its databases could not be made: "
                                 f"{type(exc).__name__}: {exc}") from exc
        return self.urls()

    def _launch(self, listen: str) -> None:
        options = (f"-k {shlex.quote(str(self.socket_dir))} -c listen_addresses='{listen}' "
                   f"-c unix_socket_permissions=0700 -c password_encryption=scram-sha-256")
        self._as_postgres([binary("pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", options], "pg_ctl start")

    def _listening(self) -> str:
        conn = self._connect()
        try:
            return str(conn.run("SHOW listen_addresses")[0][0])
        finally:
            conn.close()

    def _prepare_judging(self, graders: GraderAccess | None) -> None:
        """The judging table, and the grader role that may read it and update a claim's columns, and do nothing
        else; it may log in only while the hub runs for graders (its password is kept across starts, so running
        graders reconnect after a hub restart: delete ``grader-password`` to change it)."""
        from ladderlab.service.judging import TABLE, JudgingTable

        table = JudgingTable(self.sqlalchemy_url(JUDGING))
        try:
            table.create()
        finally:
            table.close()
        try:
            password = self.grader_password_file.read_text().strip()
        except FileNotFoundError:
            password = ""
        if len(password) != 48 or not all(c in "0123456789abcdef" for c in password):
            password = secrets.token_hex(24)
            fd = os.open(self.grader_password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
        conn = self._connect()
        try:
            if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = :r", r=GRADER_ROLE):
                conn.run(f"CREATE ROLE {GRADER_ROLE} NOLOGIN")
            if graders is None:
                conn.run(f"ALTER ROLE {GRADER_ROLE} NOLOGIN")
            else:  # hex digits only, checked above
                conn.run(f"ALTER ROLE {GRADER_ROLE} LOGIN CONNECTION LIMIT 32 PASSWORD '{password}'")
            for name in ("postgres", *DATABASES, JUDGING):  # CONNECT, TEMPORARY are PUBLIC's unless taken away
                conn.run(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
            conn.run(f'GRANT CONNECT ON DATABASE "{JUDGING}" TO {GRADER_ROLE}')
        finally:
            conn.close()
        conn = self._connect(JUDGING)
        try:
            conn.run("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            conn.run(f"GRANT USAGE ON SCHEMA public TO {GRADER_ROLE}")
            conn.run(f"REVOKE ALL ON {TABLE} FROM {GRADER_ROLE}")
            conn.run(f"GRANT SELECT, UPDATE ({', '.join(CLAIM_COLUMNS)}) ON {TABLE} TO {GRADER_ROLE}")
        finally:
            conn.close()

    def _connect(self, database: str = "postgres") -> Any:
        import pg8000.native  # type: ignore[import-untyped]

        return pg8000.native.Connection(ROLE, unix_sock=str(self.socket), database=database)

    def _create_databases(self) -> None:
        conn = self._connect()
        try:
            have = {row[0] for row in conn.run("SELECT datname FROM pg_database")}
            for name in (*DATABASES, JUDGING):
                if name not in have:
                    conn.run(f'CREATE DATABASE "{name}"')  # names of ours only
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
