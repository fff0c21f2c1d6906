"""Network observations shared by the domain modules.

The scripts below run with the observer's own (trusted) python3, inside the
network namespace of the host being observed from; they print JSON only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ladderlab.errors import LearnerState
from ladderlab.grading.checks import CannotJudge, Context, Runner

#: Connect to many (host, port) pairs at once, the way a real client does: each attempt is one kernel
#: connect() with its normal SYN retransmits (at 1 s, then 3 s) for as long as its timeout, and a port that
#: does not connect is tried again with a fresh connection; the first attempt that connects makes it open.
#: Says open / refused / filtered / unreachable for each (the last attempt's state when none connected).
TCP_SCRIPT = r"""
import json, socket, sys, time, concurrent.futures as cf
attempts = [float(t) for t in json.loads(sys.argv[1])]
targets = json.loads(sys.argv[2])
def once(host, port, timeout):
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
def probe(t):
    state = "filtered"
    for i, timeout in enumerate(attempts):
        if i:
            time.sleep(0.2)
        state = once(t[0], t[1], timeout)
        if state == "open":
            break
    return state
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

#: Answer every UDP datagram on a port with the same bytes for a while, then exit (a UDP service the checks
#: start themselves: a peer for "established" tests, or a port no rule should open).
UDP_ECHO_SCRIPT = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(0.5)
print("listening", flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        data, peer = s.recvfrom(2048); s.sendto(data, peer)
    except OSError:
        pass
"""

#: Send a datagram to each (host, port) and wait for the echo, trying again with each timeout in turn:
#: open (an answer came back) / refused (ICMP port unreachable) / filtered (nothing came back).
UDP_SCRIPT = r"""
import json, os, socket, sys, concurrent.futures as cf
attempts = [float(t) for t in json.loads(sys.argv[1])]
targets = json.loads(sys.argv[2])
def probe(t):
    state = "filtered"
    for timeout in attempts:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        token = os.urandom(8)
        try:
            s.connect((t[0], int(t[1])))
            s.send(token)
            if s.recv(2048) == token:
                return "open"
        except ConnectionRefusedError:
            state = "refused"
        except (TimeoutError, socket.timeout):
            state = "filtered"
        except OSError as exc:
            state = "unreachable" if exc.errno in (101, 113) else "error:%d" % (exc.errno or 0)
        finally:
            s.close()
    return state
with cf.ThreadPoolExecutor(max_workers=16) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""

#: Fetch one HTTP URL (optionally with headers, without following redirects); print JSON.
HTTP_SCRIPT = r"""
import json, signal, sys, urllib.request, urllib.error
url, timeout, headers, follow = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4] == "1"
def late(*_):
    raise TimeoutError("no complete answer within %gs" % (timeout + 3))
signal.signal(signal.SIGALRM, late); signal.alarm(int(timeout) + 3)  # a server that trickles bytes still ends
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


class ObservationError(CannotJudge, RuntimeError):
    """A trusted observer produced output that is not what its script prints: the grader cannot judge
    (an ``error`` verdict, never the learner's failure)."""


def control_free(text: str, what: str, allow: str = "") -> str:
    """``text`` unchanged if it holds no control character (newline, NUL, escape sequence...) other than
    those in ``allow``; otherwise :class:`~ladderlab.errors.LearnerState` (the check fails with one line).

    Every parser of text that may carry learner-chosen strings calls this first: a control character is
    how such a string forges the structure around it (a newline that starts a fake line)."""
    bad = next((ch for ch in text if not ch.isprintable() and ch not in allow), None)
    if bad is not None:
        raise LearnerState(f"{what} contains a control character ({bad!r}), so it cannot be judged - remove it")
    return text


def script_json(runner: Runner, script: str, *args: object, timeout: float) -> object:
    """Run an observer script (its own python3) with ``args``; the JSON value it printed, whatever its type."""
    result = runner.run("python3 -c %s" + " %s" * len(args), script, *args, timeout=timeout)
    if result.failed:
        raise ObservationError(f"observer script exited {result.rc}: {result.stderr.strip()[:200]}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise ObservationError(f"observer printed {result.stdout[:100]!r}, not JSON") from None


def run_json(runner: Runner, script: str, *args: object, timeout: float = 20) -> dict[str, Any]:
    """Run an observer script (its own python3) with ``args``; its printed JSON object."""
    answer = script_json(runner, script, *args, timeout=timeout)
    if not isinstance(answer, dict):
        raise ObservationError(f"unexpected observer answer {answer!r}")
    return answer


#: How a real client tries: one connect with the kernel's retransmits over 3.2 s (SYNs at 0, 1 and 3 s),
#: then a fresh connection for 1.2 s more. An open port answers the first SYN within milliseconds, so
#: "open" costs nothing; "closed" is judged only after every attempt went unanswered or was refused, so
#: a rule that drops the first SYN(s) of a source does not pass for closed. Checks that call a port
#: closed also make sure no traffic shaping (netem delays) or history-dependent rule stretches that.
REAL_CLIENT: tuple[float, ...] = (3.2, 1.2)


def tcp_states(runner: Runner, targets: Iterable[tuple[str, int]],
               attempts: Sequence[float] = REAL_CLIENT) -> list[str]:
    """``open``/``refused``/``filtered``/``unreachable`` for each (host, port), seen from ``runner``."""
    pairs = [[h, int(p)] for h, p in targets]
    if not attempts or any(not 0 < t <= 30 for t in attempts):
        raise ValueError(f"bad connection attempts {attempts!r}")
    states = script_json(runner, TCP_SCRIPT, json.dumps(list(attempts)), json.dumps(pairs),
                         timeout=sum(attempts) + 0.2 * len(attempts) + 15)
    if not isinstance(states, list) or len(states) != len(pairs) or not all(isinstance(s, str) for s in states):
        raise ObservationError(f"unexpected probe answer {states!r}")
    return states


#: A UDP client's patience: three datagrams, 1 s apart (an echo on the same network answers within ms).
UDP_CLIENT: tuple[float, ...] = (1.0, 1.0, 1.0)


def udp_states(runner: Runner, targets: Iterable[tuple[str, int]],
               attempts: Sequence[float] = UDP_CLIENT) -> list[str]:
    """``open``/``refused``/``filtered``/``unreachable`` for each UDP (host, port) echo, seen from ``runner``."""
    pairs = [[h, int(p)] for h, p in targets]
    if not attempts or any(not 0 < t <= 30 for t in attempts):
        raise ValueError(f"bad datagram attempts {attempts!r}")
    states = script_json(runner, UDP_SCRIPT, json.dumps(list(attempts)), json.dumps(pairs), timeout=sum(attempts) + 15)
    if not isinstance(states, list) or len(states) != len(pairs) or not all(isinstance(s, str) for s in states):
        raise ObservationError(f"unexpected probe answer {states!r}")
    return states


def states_from(ctx: Context, sources: list[str], address: str, port: int,
                attempts: Sequence[float] = REAL_CLIENT) -> dict[str, str]:
    """The state of ``address:port`` seen from each of ``sources``, probed at the same time."""
    with ThreadPoolExecutor(max_workers=max(1, len(sources))) as pool:
        found = pool.map(lambda s: tcp_states(ctx.observe(s), [(address, port)], attempts)[0], sources)
        return dict(zip(sources, found, strict=True))


def http_get(runner: Runner, url: str, timeout: float = 3.0, headers: dict[str, str] | None = None,
             follow: bool = True) -> dict[str, object]:
    """``{"status", "location", "body"}`` (status 0 and ``error`` when nothing answered)."""
    answer = script_json(runner, HTTP_SCRIPT, url, timeout, json.dumps(headers or {}), "1" if follow else "0",
                         timeout=timeout + 10)
    if not isinstance(answer, dict):
        raise ObservationError(f"unexpected http answer {answer!r}")
    return answer


def listen(runner: Runner, port: int, seconds: float, *, udp: bool = False) -> None:
    """Start a short-lived TCP listener (``udp``: a UDP echo) on ``port`` in the observer; return once it listens."""
    result = runner.run(
        "out=$(mktemp); (python3 -c %s %s %s >\"$out\" 2>&1 &); "
        "for _ in $(seq 200); do [ -s \"$out\" ] && break; sleep 0.01; done; cat \"$out\"",
        UDP_ECHO_SCRIPT if udp else LISTEN_SCRIPT, port, seconds, timeout=10)
    if "listening" not in result.stdout:
        raise ObservationError(f"could not listen on {'udp' if udp else 'tcp'} port {port}: "
                               f"{result.stdout.strip()[:200]}")


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
