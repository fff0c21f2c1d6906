"""PostgreSQL access-control checks: sessions opened from the network namespace of a chosen host (so the
server sees that host's address) by a PostgreSQL client written here, in the probe's own Python (the wire
protocol 3.0: TLS by SSLRequest, SCRAM-SHA-256, md5 and cleartext password authentication, simple
queries). Nothing the learner installed runs; what a check believes is what the server answered.

The application's credentials are read from its secret file through the Docker API; its health from the
probe over HTTP; the history of its health from the watcher host (ladderlab's, out of the learner's reach
during grading), whose record is read through the Docker API too. Where the app host's processes keep the
password: their command lines from the engine (``docker top``), their environments from an observer in
the host's pid namespace. Alerts on failed logins: the check makes the failed logins itself, from a host it
chooses when it runs, and reads what reached ladderlab's alert receiver (a probe host) through the Docker API.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from graders._net import ObservationError, http_get, run_json
from ladderlab.grading.checks import CannotJudge, Context, Verdict, check, fail, ok

#: A PostgreSQL client in one script: argv[1] is a JSON list of sessions
#: ``{"address", "port", "user", "password", "database", "tls", "steps": [{"sql", "tx"}]}``; it prints a JSON
#: list of ``{"connected", "tls", "auth", "code", "message", "steps": [{"ok", "rows", "code", "message"}]}``.
#: ``auth`` is what the server asked for: trust, password (cleartext), md5, scram-sha-256 (or sasl:<mechs>).
#: A step with ``tx`` runs inside BEGIN ... ROLLBACK (nothing it does stays).
PG_SCRIPT = r"""
import base64, hashlib, hmac, json, os, signal, socket, ssl, struct, sys
def late(*_):
    raise TimeoutError("no complete answer within 40s")
signal.signal(signal.SIGALRM, late); signal.alarm(40)
class Refused(Exception):
    pass
def msg(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload
def cstr(b):
    return b.decode("utf-8", "replace")
def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data
def read(s):
    head = recv_exact(s, 5)
    size = struct.unpack("!I", head[1:])[0]
    if size < 4 or size > (1 << 24):
        raise ConnectionError("bad message length %d" % size)
    return head[:1], recv_exact(s, size - 4)
def fields(payload):
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = cstr(part[1:])
    return out
def scram(s, user, password, mechanisms):
    if "SCRAM-SHA-256" not in mechanisms:
        raise Refused("28000", "server offers only " + ",".join(mechanisms))
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=,r=" + nonce
    first = ("n,," + first_bare).encode()
    s.sendall(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
    kind, payload = read(s)
    if kind == b"E":
        f = fields(payload); raise Refused(f.get("C", ""), f.get("M", ""))
    if kind != b"R" or struct.unpack("!i", payload[:4])[0] != 11:
        raise ConnectionError("expected SASLContinue")
    server_first = cstr(payload[4:])
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    if not attrs["r"].startswith(nonce):
        raise ConnectionError("server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = "c=" + base64.b64encode(b"n,,").decode() + ",r=" + attrs["r"]
    auth_message = (first_bare + "," + server_first + "," + without_proof).encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    s.sendall(msg(b"p", (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()))
def session(spec):
    out = {"connected": False, "tls": False, "auth": "", "code": "", "message": "", "steps": []}
    s = socket.create_connection((spec["address"], int(spec.get("port", 5432))), timeout=8)
    try:
        if spec.get("tls"):
            s.sendall(struct.pack("!II", 8, 80877103))
            answer = recv_exact(s, 1)
            if answer != b"S":
                out.update(code="tls", message="the server does not speak TLS")
                return out
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
            out["tls"] = True
        params = b"user\0" + spec["user"].encode() + b"\0database\0" + spec["database"].encode() + \
            b"\0application_name\0ladderlab-check\0\0"
        s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
        while True:
            kind, payload = read(s)
            if kind == b"E":
                f = fields(payload); raise Refused(f.get("C", ""), f.get("M", ""))
            if kind == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code == 0:
                    out["auth"] = out["auth"] or "trust"
                elif code == 3:
                    out["auth"] = "password"
                    s.sendall(msg(b"p", spec["password"].encode() + b"\0"))
                elif code == 5:
                    out["auth"] = "md5"
                    inner = hashlib.md5((spec["password"] + spec["user"]).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                    s.sendall(msg(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    mechs = [cstr(m) for m in payload[4:].split(b"\0") if m]
                    out["auth"] = "scram-sha-256" if "SCRAM-SHA-256" in mechs else "sasl:" + ",".join(mechs)
                    scram(s, spec["user"], spec["password"], mechs)
                elif code == 12:
                    pass
                else:
                    raise Refused("28000", "unsupported authentication request %d" % code)
            elif kind == b"Z":
                out["connected"] = True
                break
        def query(sql):
            s.sendall(msg(b"Q", sql.encode() + b"\0"))
            result = {"ok": True, "rows": [], "code": "", "message": ""}
            while True:
                kind, payload = read(s)
                if kind == b"D":
                    n = struct.unpack("!H", payload[:2])[0]; pos = 2; row = []
                    for _ in range(n):
                        size = struct.unpack("!i", payload[pos:pos + 4])[0]; pos += 4
                        if size < 0:
                            row.append(None)
                        else:
                            row.append(cstr(payload[pos:pos + size])); pos += size
                    result["rows"].append(row)
                elif kind == b"E":
                    f = fields(payload)
                    result.update(ok=False, code=f.get("C", ""), message=f.get("M", "")[:200])
                elif kind == b"Z":
                    return result
        for step in spec.get("steps", []):
            if step.get("tx"):
                query("BEGIN")
                result = query(step["sql"])
                query("ROLLBACK")
            else:
                result = query(step["sql"])
            out["steps"].append(result)
        s.sendall(msg(b"X", b""))
    except Refused as exc:
        out.update(code=exc.args[0], message=exc.args[1][:200])
    except (OSError, ssl.SSLError, ConnectionError, ValueError, KeyError, struct.error) as exc:
        out.update(code=out["code"] or "io", message=(type(exc).__name__ + ": " + str(exc))[:200])
    finally:
        s.close()
    return out
results = []
for spec in json.loads(sys.argv[1]):
    try:
        results.append(session(spec))
    except OSError as exc:
        results.append({"connected": False, "tls": False, "auth": "", "code": "io",
                        "message": (type(exc).__name__ + ": " + str(exc))[:200], "steps": []})
print(json.dumps({"sessions": results}))
"""

#: Statements of the privilege matrix, each run inside BEGIN ... ROLLBACK (``{tenant}``: the analyst's tenant).
PROBES: dict[str, str] = {
    "select": "SELECT count(*) FROM orders",
    "insert": "INSERT INTO orders (tenant, item, amount) VALUES ('{tenant}', 'ladderlab-probe', 1)",
    "update": "UPDATE orders SET amount = amount WHERE id < 0",
    "delete": "DELETE FROM orders WHERE id < 0",
    "ddl": "ALTER TABLE orders ADD COLUMN ladderlab_probe integer",
}
#: What each account may do (True: allowed, False: refused). ``app`` is whoever the app's secret file names.
MATRIX: dict[str, dict[str, bool]] = {
    "app": {"select": True, "insert": True, "update": True, "delete": True, "ddl": False},
    "app_ro": {"select": True, "insert": False, "update": False, "delete": False, "ddl": False},
    "analyst": {"select": True, "insert": False, "update": False, "delete": False, "ddl": False},
    "migrator": {"ddl": True},
}
DENIED = "42501"  # insufficient_privilege (also "must be owner of table")


def sessions(ctx: Context, source: str, specs: Sequence[Mapping[str, Any]], db: str,
             database: str) -> list[dict[str, Any]]:
    """Open each session from ``source``'s network namespace to ``db``; the server's answers, in order."""
    address = ctx.address(db)
    full = [{"address": address, "port": 5432, "database": database, "tls": True, **spec} for spec in specs]
    answer = run_json(ctx.observe(source), PG_SCRIPT, json.dumps(full), timeout=60)
    found = answer.get("sessions")
    if not isinstance(found, list) or len(found) != len(full) or not all(isinstance(s, dict) for s in found):
        raise ObservationError(f"unexpected client answer {str(answer)[:100]!r}")
    return found


def app_credentials(ctx: Context, host: str, path: str) -> tuple[str, str] | Verdict:
    """The user and password in the app's secret file (Docker API), or the failing verdict."""
    raw = ctx.read_file(host, path)
    if raw is None:
        return fail(f"{host}: {path} (the app's credentials) does not exist")
    values: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, _, value = line.strip().partition("=")
        values[key] = value
    if not values.get("user") or not values.get("password"):
        return fail(f"{host}: {path} must hold the lines user=<role> and password=<password>")
    return values["user"], values["password"]


def _why(s: Mapping[str, Any]) -> str:
    return f"{s.get('code') or 'refused'}: {s.get('message') or 'no answer'}"


def _accounts(ctx: Context, passwords: Mapping[str, str], hosts: Mapping[str, str], secret_host: str,
              secret_path: str) -> dict[str, tuple[str, str, str]] | Verdict:
    """account -> (role, password, host it connects from); ``app`` from the secret file."""
    creds = app_credentials(ctx, secret_host, secret_path)
    if isinstance(creds, Verdict):
        return creds
    out = {"app": (creds[0], creds[1], secret_host)}
    for role, password in passwords.items():
        out[role] = (role, str(password), hosts[role])
    return out


def _connects(s: Mapping[str, Any], who: str, source: str) -> Verdict | None:
    if not s.get("connected"):
        return fail(f"{who} cannot connect from {source} over TLS with its password ({_why(s)})")
    return None


@check
def privilege_matrix(ctx: Context, *, db: str, database: str, passwords: dict[str, str], hosts: dict[str, str],
                     secret_host: str, secret_path: str, tenant: str, rows: list[int]) -> Verdict:
    """Each account, connecting from its own host over TLS with its password, may do exactly what MATRIX says
    (every statement inside a transaction that is rolled back); the app's login is a member of app_rw and no
    superuser; the app and app_ro see every tenant's rows (``rows``: the seeded row counts)."""
    accounts = _accounts(ctx, passwords, hosts, secret_host, secret_path)
    if isinstance(accounts, Verdict):
        return accounts
    total = sum(int(r) for r in rows)
    problems: list[str] = []
    for account, allowed in MATRIX.items():
        role, password, source = accounts[account]
        steps = [{"sql": PROBES[action].format(tenant=tenant.replace("'", "''")), "tx": True} for action in allowed]
        steps.append({"sql": "SELECT rolsuper, CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_rw') "
                             "THEN pg_has_role(current_user, 'app_rw', 'MEMBER') ELSE false END "
                             "FROM pg_roles WHERE rolname = current_user", "tx": False})
        (s,) = sessions(ctx, source, [{"user": role, "password": password, "steps": steps}], db, database)
        who = f"{account} ({role})" if account != role else role
        refused = _connects(s, who, source)
        if refused:
            return refused
        results = s["steps"]
        for (action, want), result in zip(allowed.items(), results, strict=False):
            if result["ok"] and not want:
                problems.append(f"{who} may {action}")
            elif not result["ok"] and want:
                problems.append(f"{who} may not {action} ({result['code']}: {result['message']})")
            elif action == "select" and result["ok"] and account in ("app", "app_ro"):
                seen = int(result["rows"][0][0]) if result["rows"] else -1
                if seen != total:
                    problems.append(f"{who} sees {seen} of the {total} orders (it serves every tenant)")
        flags = results[-1]
        if not flags["ok"] or not flags["rows"]:
            return fail(f"{who} cannot read its own role attributes ({flags['code']}: {flags['message']})")
        superuser, in_rw = flags["rows"][0]
        if superuser == "t":
            problems.append(f"{who} is a superuser")
        if account == "app" and in_rw != "t":
            problems.append(f"the app's login {role} is not a member of app_rw")
    if problems:
        return fail("the privilege matrix is wrong: " + "; ".join(problems))
    return ok("migrator alters the schema; the app reads and writes; app_ro and analyst only read; "
              "no superuser among them")


@check
def tenant_isolation(ctx: Context, *, db: str, database: str, password: str, host: str, tenant: str,
                     tenants: list[list[Any]]) -> Verdict:
    """analyst, from its host, sees exactly the orders of ``tenant`` (``tenants``: [name, rows] as seeded)."""
    expected = {str(name): int(count) for name, count in tenants}
    (s,) = sessions(ctx, host, [{"user": "analyst", "password": password, "steps": [
        {"sql": "SELECT tenant, count(*) FROM orders GROUP BY tenant ORDER BY tenant", "tx": False}]}], db, database)
    refused = _connects(s, "analyst", host)
    if refused:
        return refused
    result = s["steps"][0]
    if not result["ok"]:
        return fail(f"analyst cannot read orders ({result['code']}: {result['message']})")
    seen = {str(r[0]): int(r[1]) for r in result["rows"]}
    if seen != {tenant: expected[tenant]}:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(seen.items())) or "nothing"
        return fail(f"analyst sees {shown}; it must see the {expected[tenant]} orders of {tenant} and no others")
    return ok(f"analyst sees exactly the {expected[tenant]} orders of {tenant}")


@check
def rls_forced(ctx: Context, *, db: str, database: str, password: str, host: str) -> Verdict:
    """orders has row-level security enabled and forced: its owner, migrator, is subject to it too (it has
    no policy, so it reads no rows)."""
    (s,) = sessions(ctx, host, [{"user": "migrator", "password": password, "steps": [
        {"sql": "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) FROM pg_class c "
                "WHERE c.oid = 'public.orders'::regclass", "tx": False},
        {"sql": "SELECT count(*) FROM orders", "tx": False}]}], db, database)
    refused = _connects(s, "migrator", host)
    if refused:
        return refused
    meta, count = s["steps"]
    if not meta["ok"] or not meta["rows"]:
        return fail(f"migrator cannot see the table orders ({meta['code']}: {meta['message']})")
    enabled, forced, owner = meta["rows"][0]
    if owner != "migrator":
        return fail(f"orders is owned by {owner}, not migrator")
    if enabled != "t" or forced != "t":
        return fail("row-level security on orders is " + ("not enabled" if enabled != "t" else "enabled but not "
                    "forced: its owner migrator bypasses every policy"))
    seen = count["rows"][0][0] if count["ok"] and count["rows"] else None
    if seen != "0":
        return fail(f"migrator, the owner, still reads {seen} orders under forced row-level security")
    return ok("row-level security on orders is forced: even its owner migrator reads no tenant rows")


@check
def public_revoked(ctx: Context, *, db: str, database: str, password: str, host: str,
                   user: str = "app_ro") -> Verdict:
    """PUBLIC (every role, present and future) may not connect to ``database``, create temporary tables in
    it, or create objects in schema public."""
    (s,) = sessions(ctx, host, [{"user": user, "password": password, "steps": [
        {"sql": "SELECT has_database_privilege('public', current_database(), 'CONNECT'), "
                "has_database_privilege('public', current_database(), 'TEMPORARY'), "
                "has_schema_privilege('public', 'public', 'CREATE')", "tx": False}]}], db, database)
    refused = _connects(s, user, host)
    if refused:
        return refused
    result = s["steps"][0]
    if not result["ok"] or not result["rows"]:
        return fail(f"{user} cannot read privileges ({result['code']}: {result['message']})")
    names = (f"CONNECT on database {database}", f"TEMPORARY on database {database}", "CREATE on schema public")
    kept = [name for name, value in zip(names, result["rows"][0], strict=True) if value == "t"]
    if kept:
        return fail(f"PUBLIC still has {', '.join(kept)}")
    return ok(f"PUBLIC has no CONNECT or TEMPORARY on {database} and no CREATE on schema public")


@check
def tls_scram_only(ctx: Context, *, db: str, database: str, passwords: dict[str, str], hosts: dict[str, str],
                   secret_host: str, secret_path: str) -> Verdict:
    """Every account connects from its own host over TLS, the server asking for SCRAM-SHA-256, and the
    same login without TLS is refused."""
    accounts = _accounts(ctx, passwords, hosts, secret_host, secret_path)
    if isinstance(accounts, Verdict):
        return accounts
    for role, password, source in accounts.values():
        over_tls, plain = sessions(ctx, source, [{"user": role, "password": password},
                                                 {"user": role, "password": password, "tls": False}], db, database)
        refused = _connects(over_tls, role, source)
        if refused:
            return refused
        if over_tls["auth"] != "scram-sha-256":
            return fail(f"{role} from {source}: the server asked for {over_tls['auth'] or 'nothing'} "
                        f"authentication, not scram-sha-256")
        if plain["connected"]:
            return fail(f"{role} from {source}: a connection without TLS is accepted "
                        f"(auth {plain['auth'] or 'none'})")
    return ok("every account logs in over TLS only, with SCRAM-SHA-256")


@check
def hosts_restricted(ctx: Context, *, db: str, database: str, passwords: dict[str, str], hosts: dict[str, str],
                     secret_host: str, secret_path: str, sources: list[str]) -> Verdict:
    """Every account connects from its own host (over TLS, with its password) and from none of the other
    ``sources``, even with the right password."""
    accounts = _accounts(ctx, passwords, hosts, secret_host, secret_path)
    if isinstance(accounts, Verdict):
        return accounts
    for source in sources:
        mine = [(a, r, p) for a, (r, p, h) in accounts.items() if h == source]
        others = [(a, r, p) for a, (r, p, h) in accounts.items() if h != source]
        found = sessions(ctx, source, [{"user": r, "password": p} for _, r, p in mine + others], db, database)
        for (_, role, _), s in zip(mine, found[:len(mine)], strict=True):
            refused = _connects(s, role, source)
            if refused:
                return refused
        let_in = [role for (_, role, _), s in zip(others, found[len(mine):], strict=True) if s["connected"]]
        if let_in:
            return fail(f"from {source}, {', '.join(let_in)} can log in with the right password - allow each "
                        f"account only from its own host")
    return ok("each account logs in only from its own host")


def _health(ctx: Context, host: str, source: str) -> dict[str, Any] | str:
    """The app's /health answer as JSON, or why there is none."""
    answer = http_get(ctx.observe(source), f"http://{ctx.address(host)}:8080/health", timeout=8)
    try:
        body = json.loads(str(answer.get("body") or ""))
    except ValueError:
        body = None
    if answer.get("status") != 200 or not isinstance(body, dict) or body.get("ok") is not True:
        detail = body.get("error") if isinstance(body, dict) else answer.get("error")
        return f"{answer.get('status')} {str(detail or '')[:120]}".strip()
    return body


@check
def rotated(ctx: Context, *, db: str, database: str, secret_host: str, secret_path: str, old_user: str,
            old_password: str, new_password: str, source: str = "probe") -> Verdict:
    """The app's old login (``old_user``/``old_password``) is refused from the app host; the secret file holds
    ``new_password``, its login is accepted, and the app is healthy with it now."""
    creds = app_credentials(ctx, secret_host, secret_path)
    if isinstance(creds, Verdict):
        return creds
    user, password = creds
    if password != new_password:
        return fail(f"{secret_host}: {secret_path} does not hold the new password")
    old, new = sessions(ctx, secret_host, [{"user": old_user, "password": old_password},
                                           {"user": user, "password": password}], db, database)
    if old["connected"]:
        return fail(f"the old login ({old_user} with the old password) is still accepted from {secret_host}")
    refused = _connects(new, f"the new login {user}", secret_host)
    if refused:
        return refused
    health = _health(ctx, secret_host, source)
    if isinstance(health, str):
        return fail(f"the app is not healthy: /health answers {health}")
    if health.get("user") != user:
        return fail(f"the app still logs in as {health.get('user')}, not {user} - reload it (appctl reload)")
    return ok(f"the old login is refused; the app runs healthy as {user} with the new password")


@check
def no_downtime(ctx: Context, *, secret_host: str, secret_path: str, new_password: str, watcher: str = "watch",
                record: str = "/var/lib/watch/state.json") -> Verdict:
    """The app was rotated to ``new_password`` and the watcher, sampling /health every 100 ms since the app
    first answered, saw no failure."""
    creds = app_credentials(ctx, secret_host, secret_path)
    if isinstance(creds, Verdict):
        return creds
    if creds[1] != new_password:
        return fail(f"{secret_host}: {secret_path} does not hold the new password: no rotation to judge")
    raw = ctx.read_file(watcher, record)
    try:
        state = json.loads(raw or b"")
        since, last, good, bad = state["since"], float(state["last"]), int(state["ok"]), int(state["failed"])
        failures = list(state["failures"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CannotJudge(f"the health watcher's record is unreadable: {exc}") from None
    if time.time() - last > 15:
        raise CannotJudge(f"the health watcher stopped sampling {time.time() - last:.0f}s ago")
    if since is None:
        return fail("the app never answered /health healthy")
    if bad:
        first = failures[0] if failures else ["?", "?"]
        return fail(f"the app failed {bad} of {good + bad} health samples during your work (first: "
                    f"{str(first[1])[:120]}) - rotate without a moment where its login does not work")
    return ok(f"the app answered all {good} health samples healthy, through the rotation")


@check
def secret_private(ctx: Context, *, host: str, path: str, owner_uid: int) -> Verdict:
    """The secret file is readable by its owner only, and its owner is the app's user (``owner_uid``)."""
    st = ctx.stat(host, path)
    if st is None:
        return fail(f"{host}: {path} does not exist")
    if st.mode & 0o077 or st.uid != owner_uid or not st.mode & 0o400:
        return fail(f"{host}: {path} is mode {st.mode:04o} owned by uid {st.uid} - make it 0400 (or 0600), "
                    f"owned by the app's user (uid {owner_uid})")
    return ok(f"{host}: {path} is {st.mode:04o}, owned by the app's user")


@check
def secret_not_exposed(ctx: Context, *, host: str, secret_path: str, old_password: str, new_password: str,
                       worker_status: str = "/run/app/worker.json", max_age: float = 15.0) -> Verdict:
    """No process of ``host`` holds the app's database password (the old one, the new one, or whatever the
    secret file holds) in its command line (the engine's process list) or its environment (/proc/<pid>/environ,
    read by an observer); the worker runs, logged in with the secret file's login (its status file, fresher
    than ``max_age`` seconds). Feedback names the pid and the kind of place, never the value."""
    creds = app_credentials(ctx, host, secret_path)
    if isinstance(creds, Verdict):
        return creds
    needles = {"old": old_password, "new": new_password, "current": creds[1]}
    secrets_ = [(which, value) for which, value in needles.items() if value]

    def which(text: str) -> str | None:
        return next((w for w, value in secrets_ if value in text), None)

    for proc in ctx.processes(host):  # pids here are the engine's, not the host's own: name the program instead
        found = which(proc.args)
        if found:
            program = (proc.args.split() or ["?"])[0].rsplit("/", 1)[-1][:40]
            program = "?" if which(program) else program
            return fail(f"{host}: the command line of a process {program} (uid {proc.uid}) holds the app's {found} "
                        f"database password - anyone on the host can read it (ps); let the program read {secret_path}")
    for pid, entries in sorted(ctx.process_environments(host).items()):
        for entry in entries:
            found = which(entry)
            if found:
                name = entry.partition("=")[0]
                name = "?" if which(name) else name[:40]
                return fail(f"{host}: the environment of pid {pid} (variable {name}) holds the app's {found} "
                            f"database password - it leaks to children, crash reports and /proc; let the program "
                            f"read {secret_path}")
    raw = ctx.read_file(host, worker_status)
    try:
        state = json.loads(raw or b"")
        at, healthy, user = float(state["t"]), state.get("ok") is True, state.get("user")
    except (ValueError, KeyError, TypeError):
        return fail(f"{host}: the worker is not running (no status in {worker_status}) - start it (workerctl start)")
    if time.time() - at > max_age:
        return fail(f"{host}: the worker stopped working {time.time() - at:.0f}s ago - it must keep running "
                    f"(workerctl start)")
    if not healthy or user != creds[0]:
        why = f"logs in as {user}" if healthy else str(state.get("error") or "fails")[:120]
        return fail(f"{host}: the worker does not run with the login of {secret_path} ({why})")
    return ok(f"no process of {host} shows the database password in its command line or environment; the "
              f"worker runs as {user} from {secret_path}")


class Alert(NamedTuple):
    at: float
    source: str | None


def alerts(ctx: Context, receiver: str, record: str) -> list[Alert]:
    """What reached the alert receiver (its record, through the Docker API), in order."""
    raw = ctx.read_file(receiver, record)
    if raw is None:
        raise CannotJudge(f"the alert receiver keeps no record ({receiver}: {record} is missing)")
    out = []
    text = raw.decode("utf-8", "replace")
    for line in text.split("\n")[:-1]:  # the last piece: empty, or a line still being written
        try:
            entry = json.loads(line)
            source = entry.get("source")
            out.append(Alert(float(entry["t"]), source if isinstance(source, str) else None))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CannotJudge(f"the alert receiver's record has a line it did not write: {line[:60]!r}") from None
    return out


def _fail_logins(ctx: Context, host: str, user: str, count: int, db: str, database: str) -> Verdict | None:
    """``count`` logins as ``user`` from ``host`` with a wrong password, each refused by password
    authentication (SQLSTATE 28P01); the failing verdict otherwise."""
    wrong = [{"user": user, "password": "ll-wrong-" + secrets.token_hex(8)} for _ in range(count)]
    for s in sessions(ctx, host, wrong, db, database):
        if s.get("connected"):
            return fail(f"{user} logged in from {host} with a wrong password")
        if s.get("code") != "28P01":
            return fail(f"a login as {user} from {host} with a wrong password was not refused by password "
                        f"authentication ({_why(s)}): the check cannot make failed logins")
    return None


@check(disruptive=True)
def login_alert(ctx: Context, *, db: str, database: str, sources: list[list[str]], receiver: str = "alerts",
                record: str = "/var/lib/alerts/alerts.jsonl", threshold: int = 5, window: float = 30.0,
                bound: float = 20.0, settle: float = 8.0) -> Verdict:
    """``threshold`` failed password logins from one address within ``window`` seconds raise an alert naming
    that address at the receiver within ``bound`` seconds; nothing else does.

    The source is chosen when the check runs (``sources``: [host, account] pairs whose wrong password reaches
    password authentication). The check first waits ``window`` seconds (the failed logins of the other
    checks age out of the window; no alert may arrive meanwhile), then fails ``threshold - 1`` logins (no
    alert within ``settle`` seconds), then one more: only an alert naming the source's address may follow.
    Disruptive: it runs alone, after the checks that only observe."""
    host, user = random.SystemRandom().choice([(str(h), str(u)) for h, u in sources])
    address = ctx.address(host)
    alerts(ctx, receiver, record)  # the receiver keeps a record before anything happens
    start = time.time()
    time.sleep(window + 2)
    first = time.time()
    failed = _fail_logins(ctx, host, user, threshold - 1, db, database)
    if failed:
        return failed
    time.sleep(settle)
    early = [a for a in alerts(ctx, receiver, record) if a.at >= start]
    if early:
        if early[0].at < first:
            return fail(f"an alert arrived while no address had failed to log in {threshold} times within "
                        f"{window:g} s - alert on failed logins, not on a timer or on older ones")
        return fail(f"an alert arrived when {host} had failed only {threshold - 1} logins (or fewer): alert when "
                    f"one address reaches {threshold} within {window:g} s")
    failed = _fail_logins(ctx, host, user, 1, db, database)
    if failed:
        return failed
    last = time.time()
    while True:
        found = [a for a in alerts(ctx, receiver, record) if a.at >= start]
        wrong = [a for a in found if a.source != address]
        if wrong:
            named = repr(wrong[0].source[:40]) if wrong[0].source is not None else "no source"
            return fail(f"an alert named {named}, but the {threshold} failed logins came from {host}: the alert's "
                        f"source must be the client's address (lab.address)")
        if found:
            return ok(f"{threshold} failed logins from {host} raised an alert naming its address "
                      f"{max(0.0, found[0].at - last):.1f} s after the last one; {threshold - 1} raised none")
        if time.time() > last + bound:
            return fail(f"no alert reached {receiver} within {bound:g} s of {threshold} failed logins from {host}")
        time.sleep(0.5)
