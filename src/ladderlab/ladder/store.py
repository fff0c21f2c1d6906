"""The evidence store: an append-only, hash-chained table on SQLAlchemy.

SQLite by default (``<cache>/ladder.sqlite``), any SQLAlchemy URL otherwise
(``LADDERLAB_LADDER_URL``; PostgreSQL is tested). Append-only three ways:

* the table refuses UPDATE and DELETE (triggers), so mistakes do not rewrite history;
* every entry's hash covers its payload and the previous entry's hash (``verify`` recomputes);
* after each append the chain's head (sequence number and hash) is signed with the course key
  and kept outside the database, so deleting the newest entries, or rewriting the whole tail,
  is detected too.

>>> store = Store.open(settings)                  # doctest: +SKIP
>>> store.append(evidence)                        # doctest: +SKIP
>>> store.verify().ok                             # doctest: +SKIP
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError
from ladderlab.ladder.evidence import GENESIS, Entry, Evidence, chain_hash
from ladderlab.ladder.keys import load_or_create

metadata = MetaData()
EVIDENCE = Table(
    "ladder_evidence", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("learner", String(64), nullable=False, index=True),
    Column("lab", String(80), nullable=False, index=True),
    Column("recorded_at", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)

SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS ladder_evidence_no_update BEFORE UPDATE ON ladder_evidence "
    "BEGIN SELECT RAISE(ABORT, 'ladder evidence is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS ladder_evidence_no_delete BEFORE DELETE ON ladder_evidence "
    "BEGIN SELECT RAISE(ABORT, 'ladder evidence is append-only'); END",
]
POSTGRES_GUARDS = [
    "CREATE OR REPLACE FUNCTION ladder_evidence_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'ladder evidence is append-only'; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS ladder_evidence_no_change ON ladder_evidence",
    "CREATE TRIGGER ladder_evidence_no_change BEFORE UPDATE OR DELETE ON ladder_evidence "
    "FOR EACH ROW EXECUTE FUNCTION ladder_evidence_append_only()",
]


class LedgerError(LadderlabError):
    """The store cannot be used (bad URL, unreachable database)."""


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str = ""


def default_url(settings: Settings) -> str:
    return os.environ.get("LADDERLAB_LADDER_URL") or f"sqlite:///{settings.cache_dir / 'ladder.sqlite'}"


class Store:
    def __init__(self, engine: Engine, anchor: Path | None, settings: Settings | None) -> None:
        self.engine = engine
        self.anchor = anchor
        self.settings = settings

    @classmethod
    def open(cls, settings: Settings, url: str | None = None, *, anchored: bool = True) -> Store:
        url = url or default_url(settings)
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_engine(url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise LedgerError(f"ladder store {url!r}: {exc}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", lambda dbapi, _rec: dbapi.execute("PRAGMA busy_timeout = 10000"))
        store = cls(engine, anchor_path(settings, url) if anchored else None, settings)
        store.create()
        return store

    def create(self) -> None:
        try:
            metadata.create_all(self.engine)
            guards = {"sqlite": SQLITE_GUARDS, "postgresql": POSTGRES_GUARDS}.get(self.engine.dialect.name, [])
            with self.engine.begin() as conn:
                for statement in guards:
                    conn.execute(text(statement))
        except SQLAlchemyError as exc:
            raise LedgerError(f"ladder store {self.engine.url!r}: {str(exc).splitlines()[0]}") from None

    # --- writing ---------------------------------------------------------------------------------
    def append(self, evidence: Evidence, attempts: int = 50) -> Entry:
        """Add one entry at the head of the chain (retrying, with a growing random pause, when a
        concurrent writer took the slot or holds the database)."""
        payload = evidence.payload()
        for attempt in range(attempts):
            if attempt:
                time.sleep(random.uniform(0, 0.005 * min(attempt, 20)))  # noqa: S311 - jitter, not secrecy
            try:
                with self.engine.begin() as conn:
                    head = conn.execute(select(EVIDENCE.c.seq, EVIDENCE.c.hash)
                                        .order_by(EVIDENCE.c.seq.desc()).limit(1)).first()
                    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
                    digest = chain_hash(prev, payload)
                    conn.execute(EVIDENCE.insert().values(seq=seq, learner=evidence.learner, lab=evidence.lab,
                                                          recorded_at=evidence.recorded_at, payload=payload,
                                                          prev_hash=prev, hash=digest))
            except IntegrityError:
                continue
            except OperationalError as exc:
                if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                    raise LedgerError(f"ladder store: {str(exc).splitlines()[0]}") from None
                continue
            entry = Entry(seq, evidence, prev, digest)
            self._sign_head(entry)
            return entry
        raise LedgerError("could not append to the ladder store: too many concurrent writers")

    def extend(self, items: Iterable[Evidence]) -> list[Entry]:
        return [self.append(e) for e in items]

    # --- reading ---------------------------------------------------------------------------------
    def entries(self, learner: str | None = None, learners: Iterable[str] | None = None) -> list[Entry]:
        query = select(EVIDENCE).order_by(EVIDENCE.c.seq)
        if learner:
            query = query.where(EVIDENCE.c.learner == learner)
        if learners is not None:
            query = query.where(EVIDENCE.c.learner.in_(list(learners)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Entry(r.seq, Evidence.from_json(json.loads(r.payload)), r.prev_hash, r.hash) for r in rows]

    def verify(self) -> Verification:
        """Recompute the chain from the first entry; name the first entry that does not fit."""
        prev, expected_seq, count = GENESIS, 1, 0
        with self.engine.connect() as conn:
            rows = conn.execute(select(EVIDENCE).order_by(EVIDENCE.c.seq)).all()
        hashes: dict[int, str] = {}
        for row in rows:
            count += 1
            if row.seq != expected_seq:
                return Verification(False, count, expected_seq,
                                    f"entry {expected_seq} is missing (the next one is {row.seq})")
            if row.prev_hash != prev:
                return Verification(False, count, row.seq, f"entry {row.seq} does not follow entry {row.seq - 1} "
                                                            f"(its prev_hash differs)")
            if chain_hash(row.prev_hash, row.payload) != row.hash:
                return Verification(False, count, row.seq, f"entry {row.seq} was changed (its hash does not match "
                                                            f"its content)")
            try:
                evidence = Evidence.from_json(json.loads(row.payload))
            except (ValueError, TypeError):
                return Verification(False, count, row.seq, f"entry {row.seq} does not parse")
            if (evidence.learner, evidence.lab) != (row.learner, row.lab):
                return Verification(False, count, row.seq, f"entry {row.seq}'s index columns disagree with it")
            prev, expected_seq = row.hash, row.seq + 1
            hashes[row.seq] = row.hash
        try:
            anchor = self._read_anchor()
        except LedgerError as exc:
            return Verification(False, count, None, str(exc))
        if anchor is not None:
            seq, digest = anchor
            if seq not in hashes:
                return Verification(False, count, seq, f"entries up to {seq} were recorded here, but the store "
                                                       f"ends at {expected_seq - 1} (entries were deleted)")
            if hashes[seq] != digest:
                return Verification(False, count, seq, f"entry {seq} is not the entry signed when it was written "
                                                       f"(the chain was rewritten)")
        return Verification(True, count)

    # --- the signed anchor -------------------------------------------------------------------------
    def _sign_head(self, entry: Entry) -> None:
        if self.anchor is None or self.settings is None:
            return
        self.anchor.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = load_or_create(self.settings)
        lock = os.open(self.anchor.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # writers in other threads and processes take turns
            current = self._read_anchor()
            if current is not None and current[0] > entry.seq:
                return  # another writer is ahead; its anchor stands
            message = f"{entry.seq}:{entry.hash}".encode()
            data = {"seq": entry.seq, "hash": entry.hash,
                    "signature": base64.b64encode(key.sign(message)).decode()}
            tmp = self.anchor.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
            tmp.replace(self.anchor)
        finally:
            os.close(lock)

    def _read_anchor(self) -> tuple[int, str] | None:
        if self.anchor is None or self.settings is None or not self.anchor.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(self.anchor.read_text())
            seq, digest = int(data["seq"]), str(data["hash"])
            signature = base64.b64decode(data["signature"])
        except (ValueError, KeyError, TypeError):
            raise LedgerError(f"{self.anchor} is not a ladder anchor") from None
        try:
            load_or_create(self.settings).public_key().verify(signature, f"{seq}:{digest}".encode())
        except InvalidSignature:
            raise LedgerError(f"{self.anchor} is not signed by the course key") from None
        return seq, digest


def anchor_path(settings: Settings, url: str) -> Path:
    tag = hashlib.sha256(url.encode()).hexdigest()[:16]
    return settings.cache_dir / "keys" / f"ladder-head-{tag}.json"
