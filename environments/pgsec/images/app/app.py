"""The application: GET /health opens a new database connection (TLS required) with the credentials
of the secret file and counts the orders it may see. The file (lines user=... and password=...) is read
at start and again on SIGHUP; the app takes a few seconds to start (it warms its caches)."""

import http.server
import json
import os
import signal
import sys
import time

import psycopg2

SECRET = sys.argv[1] if len(sys.argv) > 1 else "/etc/app/db.secret"
creds = {"user": "", "password": ""}


def load(*_):
    fresh = {"user": "", "password": ""}
    try:
        with open(SECRET) as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key in fresh:
                    fresh[key] = value
    except OSError as exc:
        print(f"cannot read {SECRET}: {exc}", file=sys.stderr, flush=True)
        return
    creds.update(fresh)
    print(f"credentials loaded for {creds['user']}", flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            self.send_error(404)
            return
        try:
            conn = psycopg2.connect(host="db", dbname="appdb", user=creds["user"], password=creds["password"],
                                    sslmode="require", connect_timeout=10, application_name="app")
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT current_user, count(*) FROM orders")
                    user, rows = cur.fetchone()
            finally:
                conn.close()
            status, body = 200, {"ok": True, "user": user, "rows": rows}
        except Exception as exc:
            status, body = 503, {"ok": False, "error": str(exc).strip()[:200]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


signal.signal(signal.SIGHUP, load)
load()
time.sleep(3)  # warming caches: a restart is downtime
with open("/run/app/app.pid", "w") as fh:
    fh.write(str(os.getpid()))
server = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
server.daemon_threads = True
server.serve_forever()
