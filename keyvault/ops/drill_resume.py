"""``keyvault drill --resume REPORT``: take over the checks an interrupted drill passed.

A drill of 100,000 keys cut short (Ctrl-C, SIGTERM, a key service that kept
throttling) leaves a report of what it checked. Resuming from it skips every
key it passed, so that key is not unwrapped again; the new report covers all
the selected keys and marks the ones it took over (``carried_over``).

What is taken over, and only that:

- the report must be one this machine's audit log recorded (its canonical
  SHA-256 in a ``drill`` record): a report edited afterwards to say "passed"
  is refused (exit 5);
- same team and store;
- a check that passed, for the same wrapper and the same stored envelope
  (its SHA-256): a key backed up or re-wrapped since is checked again, and so
  is one that failed, was throttled or never finished.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyvault.bounded import TooDeep, json_loads
from keyvault.canonical import canonical_json
from keyvault.errors import IntegrityError, InvalidInputError, NotFoundError, UsageError
from keyvault.ops.drill import Check, CheckKey, DrillReport
from keyvault.ops.session import Session

#: Larger than the report of a drill of 100,000 keys through three wrappers.
MAX_REPORT = 512 * 1024 * 1024
_FIELDS = ("sealer", "restore", "digest", "key_id_check", "signature")


@dataclass(frozen=True)
class Resumed:
    """The earlier report's identity and the checks it lets this drill skip."""

    sha256: str
    started: str
    carried: dict[CheckKey, Check]


def load_resume(session: Session, where: Path, report: DrillReport) -> Resumed:
    """The passed checks of the drill report at ``where`` (report.json or its directory),
    after checking it is one this machine's audit log recorded, for this team and store."""
    path = where / "report.json" if where.is_dir() else where
    doc = _read(path)
    digest = hashlib.sha256(canonical_json(doc)).hexdigest()
    if not _audited(session, digest):
        raise IntegrityError(
            f"{path} is not a drill report this machine's audit log recorded (its SHA-256 "
            f"{digest[:16]} is in no drill record): it was changed, or made elsewhere; "
            "refusing to take its checks over",
            hint="run the drill without --resume",
        )
    if (doc.get("team"), doc.get("store")) != (report.team, report.store):
        raise UsageError(
            f"{path} is the report of a drill of team {str(doc.get('team'))[:64]}"
            f" in store {str(doc.get('store'))[:200]}, not of this one",
            hint="resume with the same team and store",
        )
    carried: dict[CheckKey, Check] = {}
    for item in doc.get("checks") or []:
        check = _passed_check(item)
        if check is not None and check.envelope_sha256:
            carried[(check.wrapper, check.key_id, check.role, check.gun, check.envelope_sha256)] = (
                check
            )
    return Resumed(digest, str(doc.get("started")), carried)


def _read(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_REPORT:
            raise InvalidInputError(f"{path} is larger than a drill report ({size} bytes)")
        doc = json_loads(path.read_bytes(), max_size=MAX_REPORT)
    except FileNotFoundError:
        raise NotFoundError(
            f"no drill report at {path}",
            hint="give the report.json (or its directory) the interrupted drill named",
        ) from None
    except (OSError, TooDeep, ValueError) as exc:
        raise InvalidInputError(
            f"{path} cannot be read as a drill report ({type(exc).__name__})"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != "keyvault-drill-report":
        raise InvalidInputError(f"{path} is not a keyvault drill report")
    return doc


def _audited(session: Session, digest: str) -> bool:
    needle = f"report sha256={digest};"
    return any(
        r.get("action") == "drill" and needle in str(r.get("detail") or "")
        for r in session.audit().records()
    )


def _passed_check(item: Any) -> Check | None:
    """A check the report says passed, as a carried-over one (None: anything else)."""
    if not isinstance(item, dict) or item.get("passed") is not True:
        return None
    texts = [item.get(name) for name in ("wrapper", "key_id", *_FIELDS)]
    optional = [item.get(name) for name in ("role", "gun", "envelope_sha256")]
    if not all(isinstance(t, str) for t in texts) or not all(
        o is None or isinstance(o, str) for o in optional
    ):
        return None
    wrapper, key_id, sealer, restore, digest, key_id_check, signature = texts
    role, gun, envelope = optional
    return Check(
        str(wrapper),
        str(key_id),
        role,
        gun,
        str(sealer),
        str(restore),
        str(digest),
        str(key_id_check),
        str(signature),
        envelope_sha256=envelope,
        carried_over=True,
        complete=True,
    )
