"""Open Badges 3.0 credentials and xAPI statements from a synthetic record; the CLI around them."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ladderlab.config import Settings
from ladderlab.course import load_course
from ladderlab.ladder import xapi
from ladderlab.ladder.badges import BadgeError, did_key, issue, jwk, verify
from ladderlab.ladder.keys import load_or_create
from ladderlab.ladder.rules import ladder_for
from ladderlab.ladder.store import Store

from .test_ladder_unit import ev

NOW = datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC)


@pytest.fixture
def record(tmp_path, settings):
    local = Settings(root=settings.root, cache_dir=tmp_path / "cache")
    store = Store.open(local, f"sqlite:///{tmp_path / 'ladder.sqlite'}")
    store.append(ev(learner="ada", lab="sec-1-iptables-hardening"))
    store.append(ev(learner="ada", lab="sec-2-tls-server"))
    store.append(ev(learner="bo", lab="sec-2-tls-server"))  # level 2 without level 1: no level shown
    store.append(ev(learner="bo", lab="sec-1-iptables-hardening", passed=False))
    course = load_course(settings.course_file)
    return local, course, store


def test_one_credential_per_demonstrated_level(record, tmp_path):
    settings, course, store = record
    key = load_or_create(settings)
    issued = issue(course, ladder_for(course, store.entries(), manual=()), key, tmp_path / "badges", NOW)
    assert sorted((i.learner, i.track, i.level) for i in issued) == [("ada", "security", 1), ("ada", "security", 2)]
    cred = issued[0].credential
    assert cred["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert cred_level(cred) == 1  # the iptables lab shows the iptables clause of the cell, no more
    assert cred["credentialSubject"]["achievement"]["description"] == \
        "Understands operating systems security principles like iptables,"
    assert cred["evidence"][0]["id"].startswith("urn:ladderlab:evidence:")
    token = (tmp_path / "badges" / "ada" / "security-1.jwt").read_text().strip()
    claims = verify(token, key.public_key(), NOW)
    assert claims["iss"] == did_key(key.public_key()) == cred["issuer"]["id"]
    assert claims["nbf"] == int(NOW.timestamp())


def cred_level(cred):
    cell = cred["credentialSubject"]["achievement"]["id"].split(":achievement:", 1)[1].split(":")[0]
    return int(cell.rsplit("-", 1)[1])


def test_a_credential_quotes_only_the_clauses_that_were_shown(record, tmp_path):
    """The TLS lab shows TLS and key sizes, not SSH, encryption at rest or IPsec/WireGuard: the badge for
    Security level 2 says "in part" and quotes nothing it did not show, anywhere in the credential."""
    settings, course, store = record
    ladder = ladder_for(course, store.entries(), ["ada"], manual=())
    issued = issue(course, ladder, load_or_create(settings), tmp_path / "b", NOW)
    cred = {i.level: i.credential for i in issued}[2]
    achievement = cred["credentialSubject"]["achievement"]
    assert cred["name"] == achievement["name"] == "Security level 2 (in part: 3 of 8 clauses)"
    assert achievement["id"].endswith(
        ":achievement:security-2:basic-cryptography+tls-configuration+key-sizes-algorithms-versions")
    narrative = achievement["criteria"]["narrative"]
    for shown in ("Understands and can apply basic cryptographic principles.", "and TLS for a server",
                  "(chooses appropriate key sizes, algorithms, and versions),"):
        assert f"\u201c{shown}\u201d" in narrative and shown in achievement["description"]
    assert "Evidenced, 3 of 8 clauses of the ladder cell" in narrative
    assert "5 other clauses are not evidenced and not claimed" in narrative
    everything = json.dumps(cred, ensure_ascii=False)
    for not_shown in ("Can configure SSH", "data in transit and rest", "IPsec or WireGuard", "authorization primitives",
                      "reason about their reliability"):
        assert not_shown not in everything, not_shown
    level1 = {i.level: i.credential for i in issued}[1]["credentialSubject"]["achievement"]
    assert "users/groups" not in json.dumps(level1) and "like iptables," in level1["criteria"]["narrative"]


def test_a_cell_shown_in_full_claims_all_of_it(record, tmp_path, settings):
    from ladderlab.course import Course

    _, _, store = record
    data = yaml.safe_load(settings.course_file.read_text())
    security = next(t for t in data["ladder"]["tracks"] if t["id"] == "security")
    data["labs"][0]["cells"][0]["clauses"] = [c["id"] for c in security["clauses"][1]]
    course = Course.model_validate(data)
    ladder = ladder_for(course, store.entries(), ["ada"], manual=())
    issued = issue(course, ladder, load_or_create(settings), tmp_path / "b", NOW)
    achievement = {i.level: i.credential for i in issued}[1]["credentialSubject"]["achievement"]
    assert achievement["name"] == "Security level 1" and achievement["id"].endswith(":achievement:security-1")
    assert achievement["description"] == course.cell("security", 1).text.replace("  ", " ")
    assert "Evidenced, all 7 clauses of the ladder cell" in achievement["criteria"]["narrative"]
    assert "not evidenced" not in achievement["criteria"]["narrative"]


def _token(record, tmp_path):
    settings, course, store = record
    key = load_or_create(settings)
    issue(course, ladder_for(course, store.entries(), ["ada"], manual=()), key, tmp_path / "b", NOW)
    return key, (tmp_path / "b" / "ada" / "security-2.jwt").read_text().strip()


def test_a_changed_field_fails(record, tmp_path):
    key, token = _token(record, tmp_path)
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["credentialSubject"]["achievement"]["name"] = "Security level 6"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(BadgeError, match="signature does not verify"):
        verify(f"{head}.{forged}.{sig}", key.public_key(), NOW)


def test_a_wrong_key_fails_even_when_the_token_names_it(record, tmp_path):
    key, token = _token(record, tmp_path)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(BadgeError, match="different key"):
        verify(token, other.public_key(), NOW)
    claims = jwt.decode(token, options={"verify_signature": False})
    resigned = jwt.encode(claims, other, algorithm="EdDSA", headers={"jwk": jwk(other.public_key())})
    with pytest.raises(BadgeError, match="different key"):
        verify(resigned, key.public_key(), NOW)
    sneaky = jwt.encode(claims, other, algorithm="EdDSA", headers={"jwk": jwk(key.public_key())})
    with pytest.raises(BadgeError, match="signature does not verify"):
        verify(sneaky, key.public_key(), NOW)


def test_expired_and_not_yet_valid_fail(record, tmp_path):
    key, token = _token(record, tmp_path)
    with pytest.raises(BadgeError, match="expired on 2028-11-22"):
        verify(token, key.public_key(), NOW.replace(year=2029))
    with pytest.raises(BadgeError, match="not valid before"):
        verify(token, key.public_key(), NOW.replace(year=2025))


def test_structure_is_checked(record, tmp_path):
    key, token = _token(record, tmp_path)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["@context"] = ["https://www.w3.org/2018/credentials/v1"]
    claims["type"] = ["VerifiableCredential"]
    bad = jwt.encode(claims, key, algorithm="EdDSA", headers={"jwk": jwk(key.public_key())})
    with pytest.raises(BadgeError, match=r"structure: @context .*; type must include"):
        verify(bad, key.public_key(), NOW)


def test_xapi_statements_are_stable(record):
    _, course, store = record
    entries = store.entries()
    text = xapi.lines(course, entries)
    statements = [json.loads(line) for line in text.splitlines()]
    assert len(statements) == 4 and statements[0]["verb"]["display"]["en-US"] == "passed"
    assert statements[3]["verb"]["display"]["en-US"] == "failed" and statements[3]["result"]["success"] is False
    assert statements[0]["result"]["score"]["scaled"] == 1.0
    assert xapi.lines(course, entries) == text  # ids derive from the entry hash


def test_badges_cli_issue_and_verify(record, tmp_path, root):
    settings, _, _ = record
    env = {**os.environ, "LADDERLAB_CACHE_DIR": str(settings.cache_dir),
           "LADDERLAB_LADDER_URL": f"sqlite:///{tmp_path / 'ladder.sqlite'}"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "ladderlab.cli", *args], capture_output=True, text=True,
                              cwd=root, env=env)

    r = run("badges", "issue", "--learner", "ada", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    good = tmp_path / "out" / "ada" / "security-1.jwt"
    r = run("badges", "verify", str(good))
    assert r.returncode == 0 and "VALID" in r.stdout
    pem = run("badges", "key").stdout
    (tmp_path / "issuer.pem").write_text(pem)
    assert run("badges", "verify", str(good), "--issuer-key", str(tmp_path / "issuer.pem")).returncode == 0
    other = tmp_path / "other.pem"
    from ladderlab.ladder.keys import public_pem
    other.write_text(public_pem(Ed25519PrivateKey.generate()))
    r = run("badges", "verify", str(good), "--issuer-key", str(other))
    assert r.returncode == 1 and "different key" in r.stdout
    r = run("badges", "verify", str(tmp_path / "missing.jwt"))
    assert r.returncode == 2 and "missing.jwt" in r.stderr
    r = run("ladder", "--json")
    data = json.loads(r.stdout)
    assert {p["learner"]: p["levels"]["security"] for p in data["learners"]} == {"ada": 2, "bo": 0}
    ada = next(p for p in data["learners"] if p["learner"] == "ada")["tracks"]["security"]
    assert ada["clauses"]["1"] == {"evidenced": ["iptables"], "not_evidenced": [
        "users-and-groups", "file-permissions", "capabilities", "hardening-guides", "ssh-keys", "tls-certificates"]}
    assert ada["clauses"]["2"]["evidenced"] == ["basic-cryptography", "tls-configuration",
                                                "key-sizes-algorithms-versions"]
    r = run("ladder", "verify")
    assert r.returncode == 0 and "4 entries" in r.stdout
    r = run("ladder", "export", "--xapi", str(tmp_path / "x.jsonl"))
    assert r.returncode == 0 and len((tmp_path / "x.jsonl").read_text().splitlines()) == 4
