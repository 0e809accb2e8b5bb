"""Who runs this process, and how audit records name a key: shared by the session and
the policy checks, so neither has to import the other."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyvault.audit import KeyRef
    from keyvault.names import KeyAddress


def local_principal() -> str:
    """Who runs this process, as the file store knows it: user@host."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    return f"{user}@{os.uname().nodename}"


def key_ref(address: KeyAddress) -> KeyRef:
    from keyvault.audit import KeyRef

    return KeyRef(address.key_id, address.role, address.gun)
