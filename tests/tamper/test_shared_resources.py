"""Finding 8: a lab host must not exhaust what every environment on the grading host shares.

- The host's connection-tracking table: thousands of connections between two lab hosts
  used to add thousands of entries to the *host's* table (bridged traffic is tracked with
  br_netfilter), and they outlived the environment. Now bridged traffic on ladderlab
  bridges is NOTRACK in the host's raw table (hostguard).
- The host's disk: a lab host (root inside) could write gigabytes into its writable layer.
  Now a DiskWatch stops a host that writes past its limit within one poll interval.

Real Docker, run under the shared lock.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ladderlab.environments.runtime import load_spec, up
from ladderlab.environments.watchdog import DiskWatch

pytestmark = pytest.mark.docker

CONNTRACK_COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")
FLOOD = 3000
MIB = 1 << 20

# Open and close FLOOD connections to target's web server, 64 at a time; print how many succeeded.
FLOOD_SCRIPT = """
import socket, sys
from concurrent.futures import ThreadPoolExecutor
def one(_):
    try:
        socket.create_connection(("target", 80), timeout=3).close()
        return 1
    except OSError:
        return 0
with ThreadPoolExecutor(64) as pool:
    print(sum(pool.map(one, range(int(sys.argv[1])))))
"""


def _count() -> int:
    return int(CONNTRACK_COUNT.read_text())


def test_a_connection_flood_between_lab_hosts_leaves_the_host_conntrack_table_alone(settings, client, images):
    assert CONNTRACK_COUNT.exists(), "conntrack is not loaded on this host: nothing to measure"
    env = up(settings, "firewall", client=client, learner="ctflood")
    try:
        before = _count()
        opened = env.host("outsider").run("python3 -c %s %s", FLOOD_SCRIPT, FLOOD, timeout=300)
        assert opened.rc == 0 and int(opened.stdout.split()[-1]) == FLOOD, opened.stderr[-500:]
        grown = _count() - before
        # Untracked, the flood adds nothing; tracked, it adds one TIME_WAIT entry per connection (120 s).
        assert grown < FLOOD // 10, f"the host's conntrack table grew by {grown} entries from {FLOOD} connections"
    finally:
        env.down()


FILL_SCRIPT = """
import os, sys, time
chunk = b"x" * (8 << 20)
with open("/var/tmp/fill", "wb") as fh:
    for _ in range(int(sys.argv[1])):
        fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
        time.sleep(0.1)
"""


def test_a_host_writing_past_its_disk_limit_is_stopped_within_a_poll(settings, client, images):
    limit, interval = 64 * MIB, 1.0
    spec = load_spec(settings, "firewall")
    env = up(settings, "firewall", client=client, learner="diskfill")
    try:
        # The env.yaml limits (default 1 GiB) are what a watch on the environment uses.
        assert DiskWatch.for_env(env, spec).limits == {h: 1 << 30 for h in env.record.hosts}
        watch = DiskWatch(client, {h: i.container for h, i in env.record.hosts.items()}, limit, interval=interval)
        with watch:
            # ~80 MiB/s for up to 512 MiB: the limit is crossed after about 0.8 s.
            started = time.monotonic()
            env.host("target").run("setsid python3 -c %s 64 >/dev/null 2>&1 &", FILL_SCRIPT)
            while "target" not in watch.exceeded and time.monotonic() - started < 30:
                time.sleep(0.05)
            took = time.monotonic() - started
        assert watch.exceeded.keys() == {"target"}, f"not detected in {took:.1f}s (sizes {watch.sizes})"
        assert took < 0.8 + interval + 3, f"detected only after {took:.1f}s"
        assert watch.exceeded["target"] < limit + 200 * MIB
        target = client.api.inspect_container(env.record.hosts["target"].container)
        assert not target["State"]["Running"], "the host over its limit still runs"
        size = client.api.containers(all=True, size=True, filters={"id": [target["Id"]]})[0].get("SizeRw") or 0
        time.sleep(1.0)
        again = client.api.containers(all=True, size=True, filters={"id": [target["Id"]]})[0].get("SizeRw") or 0
        assert again == size, "the stopped host's layer still grows"
        for other in ("monitor", "outsider"):  # the others keep running: only the writer is stopped
            assert client.api.inspect_container(env.record.hosts[other].container)["State"]["Running"]
        assert watch.feedback() == [f"host target wrote {watch.exceeded['target'] / MIB:.0f} MiB to its disk, "
                                    "over its limit of 64 MiB; it was stopped"]
    finally:
        env.down()
