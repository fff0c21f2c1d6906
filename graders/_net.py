"""Network observations shared by the domain modules.

The scripts below run with the observer's own (trusted) python3, inside the
network namespace of the host being observed from; they print JSON only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ladderlab.grading.checks import Context, Runner

#: Connect to many (host, port) pairs at once; say open / refused / filtered / unreachable for each.
TCP_SCRIPT = r"""
import json, socket, sys, concurrent.futures as cf
timeout = float(sys.argv[1])
targets = json.loads(sys.argv[2])
def probe(t):
    host, port = t
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, int(port)))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, socket.timeout):
        return "filtered"
    except OSError as exc:
        return "unreachable" if exc.errno in (101, 113) else "error:%d" % (exc.errno or 0)
    finally:
        s.close()
with cf.ThreadPoolExecutor(max_workers=16) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""

#: Accept connections on a port for a while, then exit (a peer for "established" tests).
LISTEN_SCRIPT = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16); s.settimeout(0.5)
print("listening", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        c, _ = s.accept(); c.close()
    except OSError:
        pass
"""

#: Fetch one HTTP URL (optionally with headers, without following redirects); print JSON.
HTTP_SCRIPT = r"""
import json, sys, urllib.request, urllib.error
url, timeout, headers, follow = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4] == "1"
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
opener = urllib.request.build_opener() if follow else urllib.request.build_opener(Stay)
request = urllib.request.Request(url, headers=headers)
try:
    with opener.open(request, timeout=timeout) as r:
        print(json.dumps({"status": r.status, "location": r.headers.get("Location", ""),
                          "body": r.read(65536).decode("utf-8", "replace")}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "location": exc.headers.get("Location", ""),
                      "body": exc.read(4096).decode("utf-8", "replace")}))
except Exception as exc:
    print(json.dumps({"status": 0, "error": type(exc).__name__ + ": " + str(exc)[:200]}))
"""


class ObservationError(RuntimeError):
    """A trusted observer produced output that is not what its script prints."""


def _json(runner: Runner, script: str, *args: object, timeout: float) -> object:
    result = runner.run("python3 -c %s" + " %s" * len(args), script, *args, timeout=timeout)
    if result.failed:
        raise ObservationError(f"observer script exited {result.rc}: {result.stderr.strip()[:200]}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise ObservationError(f"observer printed {result.stdout[:100]!r}, not JSON") from None


def run_json(runner: Runner, script: str, *args: object, timeout: float = 20) -> dict[str, Any]:
    """Run an observer script (its own python3) with ``args``; its printed JSON object."""
    answer = _json(runner, script, *args, timeout=timeout)
    if not isinstance(answer, dict):
        raise ObservationError(f"unexpected observer answer {answer!r}")
    return answer


#: How long a connection attempt may go unanswered before the port counts as filtered. On a
#: local bridge an open port answers within milliseconds, even under load; checks that call a
#: port closed also make sure no traffic shaping (netem delays) stretches that (``shaping``).
FILTERED_AFTER = 0.35


def tcp_states(runner: Runner, targets: Iterable[tuple[str, int]], timeout: float = FILTERED_AFTER) -> list[str]:
    """``open``/``refused``/``filtered``/``unreachable`` for each (host, port), seen from ``runner``."""
    pairs = [[h, int(p)] for h, p in targets]
    states = _json(runner, TCP_SCRIPT, timeout, json.dumps(pairs), timeout=timeout + 15)
    if not isinstance(states, list) or len(states) != len(pairs) or not all(isinstance(s, str) for s in states):
        raise ObservationError(f"unexpected probe answer {states!r}")
    return states


def states_from(ctx: Context, sources: list[str], address: str, port: int,
                timeout: float = FILTERED_AFTER) -> dict[str, str]:
    """The state of ``address:port`` seen from each of ``sources``, probed at the same time."""
    with ThreadPoolExecutor(max_workers=max(1, len(sources))) as pool:
        found = pool.map(lambda s: tcp_states(ctx.observe(s), [(address, port)], timeout)[0], sources)
        return dict(zip(sources, found, strict=True))


def http_get(runner: Runner, url: str, timeout: float = 3.0, headers: dict[str, str] | None = None,
             follow: bool = True) -> dict[str, object]:
    """``{"status", "location", "body"}`` (status 0 and ``error`` when nothing answered)."""
    answer = _json(runner, HTTP_SCRIPT, url, timeout, json.dumps(headers or {}), "1" if follow else "0",
                   timeout=timeout + 10)
    if not isinstance(answer, dict):
        raise ObservationError(f"unexpected http answer {answer!r}")
    return answer


def listen(runner: Runner, port: int, seconds: float) -> None:
    """Start a short-lived listener on ``port`` in the observer; return once it listens."""
    result = runner.run(
        "out=$(mktemp); (python3 -c %s %s %s >\"$out\" 2>&1 &); "
        "for _ in $(seq 200); do [ -s \"$out\" ] && break; sleep 0.01; done; cat \"$out\"",
        LISTEN_SCRIPT, port, seconds, timeout=10)
    if "listening" not in result.stdout:
        raise ObservationError(f"could not listen on port {port}: {result.stdout.strip()[:200]}")


#: Queueing disciplines a container interface has unless someone configured traffic control.
PLAIN_QDISCS = {"noqueue", "pfifo_fast", "fq_codel", "mq", "pfifo", "fq"}


def shaping(runner: Runner) -> list[str]:
    """Non-default qdiscs (netem, tbf, ingress...) in the observed namespace: they can delay
    answers past the probe timeout and make an open port look closed."""
    result = runner.run("tc qdisc show", timeout=10)
    if result.failed:
        raise ObservationError(f"tc qdisc show exited {result.rc}: {result.stderr.strip()[:200]}")
    found = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "qdisc" and parts[1] not in PLAIN_QDISCS:
            dev = parts[parts.index("dev") + 1] if "dev" in parts else "?"
            found.append(f"{parts[1]} on {dev}")
    return found


def describe(state: str) -> str:
    return {"open": "accepts connections", "refused": "refuses connections (RST)",
            "filtered": "does not answer (dropped)", "unreachable": "is unreachable"}.get(state, state)
