"""The evidence chain on a real PostgreSQL: a throwaway cluster from the machine's server
binaries, on a loopback port, for this module only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ladderlab.config import Settings
from ladderlab.hub.database import binary
from ladderlab.ladder.store import Store

from ..unit.test_ladder_unit import ev


@pytest.fixture(scope="module")
def postgres():
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="ll-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    data = base / "data"
    subprocess.run([*as_user, binary("initdb"), "-D", str(data), "-U", "ladder", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*as_user, binary("postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
                               "-c", "listen_addresses=127.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"postgresql+pg8000://ladder@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.1)
    time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def store(postgres, tmp_path):
    from sqlalchemy import create_engine, text

    with create_engine(postgres).begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS ladder_evidence"))
    return Store.open(Settings(root=tmp_path, cache_dir=tmp_path / ".cache"), postgres)


def test_append_verify_and_refuse_changes(store):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    for i in range(5):
        store.append(ev(learner=f"l{i}"))
    assert store.verify().ok and store.verify().entries == 5
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("UPDATE ladder_evidence SET learner = 'eve'"))
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM ladder_evidence WHERE seq = 5"))


def test_tampering_by_a_superuser_is_found(store):
    from sqlalchemy import text

    for i in range(4):
        store.append(ev(learner=f"l{i}"))
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE ladder_evidence DISABLE TRIGGER ALL"))
        conn.execute(text("UPDATE ladder_evidence SET payload = replace(payload, :was, :now) WHERE seq = 3"),
                     {"was": '"score":10.0', "now": '"score":9.0'})
    v = store.verify()
    assert not v.ok and v.first_broken == 3 and "was changed" in v.reason
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM ladder_evidence WHERE seq >= 3"))
    v = store.verify()
    assert not v.ok and "deleted" in v.reason


def test_concurrent_writers_keep_one_chain(store):
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: store.append(ev(learner=f"w{i}")), range(40)))
    v = store.verify()
    assert v.ok and v.entries == 40
    assert sorted(e.evidence.learner for e in store.entries()) == sorted(f"w{i}" for i in range(40))
