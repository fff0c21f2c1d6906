"""ladderlab's alert receiver (a probe host: learners' notebooks cannot reach into it, only send to it).
POST /alert with a JSON object body; every alert is appended as one JSON line to
/var/lib/alerts/alerts.jsonl: {"t": when received, "peer": the sender's address, "source": the body's
"source" if it is a string, "body": the body, cut}. Bounded: bodies of at most 4 KiB; past 1000 alerts the
record is cut to the newest 500 (replaced atomically: a reader sees the old record or the new one)."""

import http.server
import json
import os
import threading
import time

RECORD = "/var/lib/alerts/alerts.jsonl"
LIMIT, KEEP = 4096, 1000
lock = threading.Lock()
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        if self.path.split("?")[0] != "/alert":
            self.send_error(404)
            return
        size = int(self.headers.get("Content-Length") or 0)
        if size < 0 or size > LIMIT:
            self.send_error(413)
            return
        raw = self.rfile.read(size).decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        source = body.get("source") if isinstance(body, dict) else None
        entry = {"t": time.time(), "peer": self.client_address[0],
                 "source": source[:100] if isinstance(source, str) else None, "body": raw[:300]}
        with lock:
            with open(RECORD, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            count += 1
            if count > KEEP:
                with open(RECORD) as fh:
                    newest = fh.readlines()[-(KEEP // 2):]
                with open(RECORD + ".tmp", "w") as fh:
                    fh.writelines(newest)
                os.replace(RECORD + ".tmp", RECORD)
                count = len(newest)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


open(RECORD, "a").close()
server = http.server.ThreadingHTTPServer(("0.0.0.0", 9000), Handler)
server.daemon_threads = True
server.serve_forever()
