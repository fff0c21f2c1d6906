"""Send RATE requests per second to TARGET, forever, from a few threads."""

import os
import threading
import time
import urllib.error
import urllib.request

TARGET = os.environ.get("TARGET", "http://app:8080/api/checkout")
RATE = float(os.environ.get("RATE", "10"))


def worker(interval):
    while True:
        started = time.monotonic()
        try:
            urllib.request.urlopen(TARGET, timeout=5).read()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


for _ in range(4):
    threading.Thread(target=worker, args=(4 / RATE,), daemon=True).start()
while True:
    time.sleep(3600)
