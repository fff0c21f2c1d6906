"""Sample http://app:8080/health every 100 ms from the first healthy answer on, and keep a summary in
/var/lib/watch/state.json (rewritten atomically): samples, failures, the first failures."""

import json
import os
import time
import urllib.request

STATE = "/var/lib/watch/state.json"
state = {"started": time.time(), "since": None, "last": None, "ok": 0, "failed": 0, "failures": []}


def save():
    tmp = STATE + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, STATE)


save()
while True:
    t0 = time.time()
    try:
        with urllib.request.urlopen("http://app:8080/health", timeout=10) as r:
            healthy = r.status == 200 and json.loads(r.read(4096)).get("ok") is True
            why = "" if healthy else f"status {r.status}"
    except Exception as exc:
        healthy, why = False, f"{type(exc).__name__}: {exc}"[:160]
    state["last"] = t0
    if healthy:
        state["ok"] += 1
        state["since"] = state["since"] or t0
    elif state["since"] is not None:
        state["failed"] += 1
        if len(state["failures"]) < 20:
            state["failures"].append([round(t0, 3), why])
    save()
    time.sleep(max(0.0, 0.1 - (time.time() - t0)))
