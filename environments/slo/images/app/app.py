"""checkout: a tiny HTTP service instrumented for the four golden signals.

GET /api/checkout answers 200, or 500 for a seeded share of requests
(ERROR_RATIO), with a latency that is usually fast and occasionally slow
(SLOW_RATIO of requests take SLOW_SECONDS). GET /metrics serves Prometheus
metrics; GET /healthz answers 200.
"""

import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

ERROR_RATIO = float(os.environ.get("ERROR_RATIO", "0.01"))
SLOW_RATIO = float(os.environ.get("SLOW_RATIO", "0.05"))
SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "0.4"))

REQUESTS = Counter("http_requests_total", "HTTP requests served.", ["handler", "code"])
LATENCY = Histogram("http_request_duration_seconds", "Request latency.", ["handler"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being served now.")
CAPACITY = Gauge("http_requests_capacity", "Requests the service can serve at once.")
CAPACITY.set(32)
slots = threading.BoundedSemaphore(32)


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path == "/metrics":
            self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self._reply(200, b"ok\n")
        elif self.path.startswith("/api/checkout"):
            with slots, IN_FLIGHT.track_inprogress(), LATENCY.labels("checkout").time():
                time.sleep(SLOW_SECONDS if random.random() < SLOW_RATIO else random.uniform(0.002, 0.03))
                code = 500 if random.random() < ERROR_RATIO else 200
            REQUESTS.labels("checkout", str(code)).inc()
            self._reply(code, b"ok\n" if code == 200 else b"error\n")
        else:
            self._reply(404, b"not found\n")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("", 8080), Handler).serve_forever()
