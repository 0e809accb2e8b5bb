"""Who runs this process, and how audit records name a key: shared by the session and
the policy checks, so neither has to import the other."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyvault.audit import KeyRef
    from keyvault.names import KeyAddress

#: Where systemd (and dbus) keep the machine's stable ID.
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def local_principal() -> str:
    """Who runs this process, as the kernel knows it: user@host.

    Taken from the real uid, never from ``LOGNAME``/``USER`` (which anyone can set,
    and ``getpass.getuser`` reads first): the audit log and the file store's policy
    check must not name whoever the environment claims.
    """
    import pwd

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (containers): the number
        user = f"uid:{uid}"
    return f"{user}@{os.uname().nodename}"


def audit_log_id(log: Path) -> str:
    """This audit log's name among the store's checkpoints: stable for one machine, user
    and log file, and distinct across them (container images may share a machine ID, so
    the host name is part of it)."""
    machine = ""
    for path in MACHINE_ID_FILES:
        try:
            machine = path.read_text(encoding="ascii", errors="replace").strip()[:64]
            break
        except OSError:
            continue
    seed = "\0".join(
        ("keyvault-audit-log", machine, os.uname().nodename, str(os.getuid()), str(log.absolute()))
    )
    return hashlib.sha256(seed.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def key_ref(address: KeyAddress) -> KeyRef:
    from keyvault.audit import KeyRef

    return KeyRef(address.key_id, address.role, address.gun)
