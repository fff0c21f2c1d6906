"""The app's background worker: every 2 s it logs in to the database, counts the orders and writes what
happened to /run/app/worker.json. Its login: DATABASE_URL from its environment when that is set (how it was
deployed), else the lines user=... and password=... of the secret file (argv[1]), read afresh every time."""

import json
import os
import sys
import time

import psycopg2

SECRET = sys.argv[1] if len(sys.argv) > 1 else "/etc/app/db.secret"
STATUS = "/run/app/worker.json"


def connect():
    url = os.environ.get("DATABASE_URL")
    if url:
        return psycopg2.connect(url, connect_timeout=10, application_name="worker")
    creds = {"user": "", "password": ""}
    with open(SECRET) as fh:
        for line in fh:
            key, _, value = line.strip().partition("=")
            if key in creds:
                creds[key] = value
    return psycopg2.connect(host="db", dbname="appdb", user=creds["user"], password=creds["password"],
                            sslmode="require", connect_timeout=10, application_name="worker")


while True:
    t0 = time.time()
    try:
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user, count(*) FROM orders")
                user, rows = cur.fetchone()
        finally:
            conn.close()
        state = {"t": t0, "ok": True, "user": user, "rows": rows}
    except Exception as exc:
        state = {"t": t0, "ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:200]}
    try:
        with open(STATUS + ".tmp", "w") as fh:
            json.dump(state, fh)
        os.replace(STATUS + ".tmp", STATUS)
    except OSError as exc:
        print(f"cannot write {STATUS}: {exc}", file=sys.stderr, flush=True)
    time.sleep(2)
