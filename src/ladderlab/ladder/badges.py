"""Open Badges 3.0 credentials for demonstrated ladder levels, as VC-JWT (OB 3.0 section 8.2).

The JWT payload is the ``OpenBadgeCredential`` itself (VC 2.0 + OB v3p0 contexts), with the
registered claims ``iss`` (issuer id), ``jti`` (credential id), ``sub`` (subject id), ``nbf``
(validFrom) and ``exp`` (validUntil); the JOSE header carries the issuer's public key as a
``jwk``. Signing and verification use PyJWT (EdDSA, Ed25519). The issuer is a ``did:key``
derived from the course key, and verification pins the key: a credential signed by any other
key fails, even if it carries that key in its header.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ladderlab.course import Course
from ladderlab.ladder.evidence import LAB, RUBRIC
from ladderlab.ladder.rules import Progress

CONTEXT = ["https://www.w3.org/ns/credentials/v2", "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"]
VALID_YEARS = 2
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: The ``genre`` of an evidence item, by evidence kind: what kind of judgement stands behind it.
GENRES = {LAB: "Graded lab, re-run on a fresh environment and judged from outside the learner's reach",
          RUBRIC: "Manual rubric grade: a trainer graded the lab's written part in nbgrader's formgrader"}


class BadgeError(ValueError):
    """A credential does not verify; the message says why."""


def _b58(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def did_key(public: Ed25519PublicKey) -> str:
    """``did:key`` of an Ed25519 key (multicodec 0xed01, base58btc)."""
    return "did:key:z" + _b58(b"\xed\x01" + _raw(public))


def jwk(public: Ed25519PublicKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(_raw(public)).rstrip(b"=").decode()}


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Issued:
    learner: str
    track: str
    level: int
    path: Path
    credential: dict[str, Any]


def credential_for(course: Course, progress: Progress, track_id: str, level: int, issuer: str,
                   now: datetime.datetime, valid_years: int = VALID_YEARS) -> dict[str, Any]:
    """The OpenBadgeCredential for one demonstrated cell (unsigned). It claims only what was shown: the
    achievement's description and criteria quote the cell's evidenced clauses, never the whole cell text,
    and a cell demonstrated in part says so in its name ("in part: 3 of 8 clauses") and has its own
    achievement id (the evidenced clause ids appended). The evidence lists each lab's automatic entry and,
    for a lab with a manually graded part, its manual grade (grader, rubric version) as a second item, each
    with its ``genre``; the criteria say which kinds stand behind each lab."""
    track = course.track(track_id)
    cell = progress.cells[(track_id, level)]
    texts = {c.id: c.text for c in course.cell(track_id, level).clauses}
    text = " ".join(texts[c] for c in cell.evidenced)
    quoted = " ".join(f"\u201c{texts[c]}\u201d" for c in cell.evidenced)
    unclaimed = len(cell.not_evidenced)
    labs = {lab.id: lab for lab in course.labs}
    evidence = []
    for lab_id in cell.labs:
        status = progress.labs[lab_id]
        best = status.best
        assert best is not None
        e = best.evidence
        passed = ", ".join(c.id for c in e.checks if c.passed)
        evidence.append({
            "id": f"urn:ladderlab:evidence:{best.seq}:{best.hash}",
            "type": ["Evidence"],
            "name": labs[lab_id].title,
            "description": f"{lab_id}: {e.score:g}/{e.max_score:g} on {e.recorded_at} (pass mark "
                           f"{e.threshold:.0%}); checks passed: {passed}",
            "genre": GENRES[LAB],
        })
        grade = status.rubric
        if grade is not None and grade.evidence.rubric is not None:
            g, r = grade.evidence, grade.evidence.rubric
            criteria = ", ".join(f"{k} {v:g}" for k, v in (r.criteria or {}).items())
            evidence.append({
                "id": f"urn:ladderlab:evidence:{grade.seq}:{grade.hash}",
                "type": ["Evidence"],
                "name": f"{labs[lab_id].title}: manual rubric",
                "description": f"{lab_id}: {g.score:g}/{g.max_score:g} on {g.recorded_at} against rubric {r.version} "
                               f"(pass mark {r.pass_points:g}), graded by {r.grader}, for the same submission as "
                               f"entry {best.seq}" + (f"; criteria: {criteria}" if criteria else ""),
                "genre": GENRES[RUBRIC],
            })
    basis = "; ".join(f"{lab_id}: {progress.labs[lab_id].basis}" for lab_id in cell.labs)
    valid_from = now
    valid_until = now.replace(year=now.year + valid_years)
    achievement_id = f"urn:ladderlab:{course.id}:achievement:{track_id}-{level}"
    name = f"{track.name} level {level}"
    if cell.partial:
        achievement_id += ":" + "+".join(cell.evidenced)
        name += f" (in part: {cell.claim})"
    rest = (f" The cell's {unclaimed} other clause{'' if unclaimed == 1 else 's'} "
            f"{'is' if unclaimed == 1 else 'are'} not evidenced and not claimed." if unclaimed else "")
    return {
        "@context": CONTEXT,
        "id": f"urn:uuid:{uuid.uuid4()}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {"id": issuer, "type": ["Profile"], "name": course.title},
        "validFrom": _iso(valid_from),
        "validUntil": _iso(valid_until),
        "name": name,
        "credentialSubject": {
            "id": f"urn:ladderlab:{course.id}:learner:{progress.learner}",
            "type": ["AchievementSubject"],
            "achievement": {
                "id": achievement_id,
                "type": ["Achievement"],
                "achievementType": "Competency",
                "name": name,
                "description": text,
                "criteria": {"narrative": f"Pass every lab mapped to {track.name} level {level} "
                                          f"({', '.join(cell.labs)}). Evidenced, {cell.claim} of the ladder "
                                          f"cell: {quoted}{rest} Evidence behind it: {basis}."},
                "alignment": [{"type": ["Alignment"], "targetName": f"{track.name} L{level}",
                               "targetType": "ext:LadderCell",
                               "targetUrl": f"urn:ladderlab:{course.id}:ladder:{track_id}:{level}"}],
            },
        },
        "evidence": evidence,
    }


def sign(credential: dict[str, Any], key: Ed25519PrivateKey) -> str:
    claims = dict(credential)
    claims.update({
        "iss": credential["issuer"]["id"], "jti": credential["id"], "sub": credential["credentialSubject"]["id"],
        "nbf": int(datetime.datetime.fromisoformat(credential["validFrom"].replace("Z", "+00:00")).timestamp()),
        "exp": int(datetime.datetime.fromisoformat(credential["validUntil"].replace("Z", "+00:00")).timestamp()),
    })
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "JWT", "jwk": jwk(key.public_key())})


def issue(course: Course, ladder: dict[str, Progress], key: Ed25519PrivateKey, out: Path,
          now: datetime.datetime | None = None) -> list[Issued]:
    """One credential per demonstrated level (a cell with labs, within the level shown) per learner."""
    now = now or datetime.datetime.now(datetime.UTC)
    issuer = did_key(key.public_key())
    issued = []
    for learner, progress in ladder.items():
        for track_id, shown in progress.levels.items():
            for level in range(1, shown + 1):
                cell = progress.cells[(track_id, level)]
                if not cell.labs:
                    continue
                credential = credential_for(course, progress, track_id, level, issuer, now)
                path = out / learner / f"{track_id}-{level}.jwt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(sign(credential, key) + "\n")
                path.with_suffix(".json").write_text(json.dumps(credential, indent=2) + "\n")
                issued.append(Issued(learner, track_id, level, path, credential))
    return issued


def verify(token: str, issuer_key: Ed25519PublicKey, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The credential if ``token`` is a valid OpenBadgeCredential signed by ``issuer_key``; else BadgeError."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise BadgeError(f"not a JWT: {exc}") from None
    if header.get("alg") != "EdDSA":
        raise BadgeError(f"unexpected algorithm {header.get('alg')!r} (expected EdDSA)")
    if header.get("jwk") != jwk(issuer_key):
        raise BadgeError("issued by a different key than the pinned issuer key")
    moment = (now or datetime.datetime.now(datetime.UTC)).timestamp()
    try:
        claims: dict[str, Any] = jwt.decode(token, issuer_key, algorithms=["EdDSA"],
                                            options={"require": ["iss", "jti", "nbf", "exp", "sub"],
                                                     "verify_exp": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        raise BadgeError("the signature does not verify: the credential was changed after signing") from None
    except jwt.PyJWTError as exc:
        raise BadgeError(f"invalid token: {exc}") from None
    if claims["exp"] < moment:
        raise BadgeError(f"expired on {_iso(datetime.datetime.fromtimestamp(claims['exp'], datetime.UTC))}")
    if claims["nbf"] > moment:
        raise BadgeError(f"not valid before {_iso(datetime.datetime.fromtimestamp(claims['nbf'], datetime.UTC))}")
    problems = _structure(claims, issuer_key)
    if problems:
        raise BadgeError("structure: " + "; ".join(problems))
    return claims


def _structure(c: dict[str, Any], issuer_key: Ed25519PublicKey) -> list[str]:
    problems = []
    if c.get("@context", [])[:2] != CONTEXT:
        problems.append("@context must start with the VC 2.0 and OB 3.0 contexts")
    if not {"VerifiableCredential", "OpenBadgeCredential"} <= set(c.get("type", [])):
        problems.append("type must include VerifiableCredential and OpenBadgeCredential")
    issuer = c.get("issuer", {})
    if not isinstance(issuer, dict) or issuer.get("id") != c.get("iss") or issuer.get("id") != did_key(issuer_key):
        problems.append("issuer.id must be the iss claim and the pinned key's did:key")
    subject = c.get("credentialSubject", {})
    achievement = subject.get("achievement", {}) if isinstance(subject, dict) else {}
    if not isinstance(subject, dict) or subject.get("id") != c.get("sub"):
        problems.append("credentialSubject.id must be the sub claim")
    if not {"id", "name", "criteria"} <= set(achievement) or "Achievement" not in achievement.get("type", []):
        problems.append("credentialSubject.achievement needs id, type Achievement, name and criteria")
    if c.get("id") != c.get("jti"):
        problems.append("id must be the jti claim")
    for field, claim in (("validFrom", "nbf"), ("validUntil", "exp")):
        try:
            stamp = datetime.datetime.fromisoformat(str(c.get(field, "")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            problems.append(f"{field} is not a date")
            continue
        if int(stamp) != c.get(claim):
            problems.append(f"{field} disagrees with {claim}")
    return problems
