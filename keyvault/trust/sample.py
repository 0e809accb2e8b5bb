"""Write a sample trust directory of Notary-format keys, without the notary binary.

Used by demos, docs and tests: a root key plus a targets and a snapshot key
for each GUN, all ECDSA P-256, laid out and encoded exactly as notary 0.7
writes them (``private/<id>.key``; ``gun:``/``role:`` headers, sorted; a blank
line; 64-column base64; PKCS#8 PBES2 with PBKDF2-HMAC-SHA1, an 8-byte salt,
2048 iterations and AES-256-CBC; the inner PrivateKeyInfo in notary's
dialect). An empty passphrase gives an unencrypted ``PRIVATE KEY``, as notary
does. Directories are 0700, files 0600, created with ``O_EXCL``: an existing
file is never overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from keyvault import fsutil
from keyvault.errors import LocalIOError, UsageError
from keyvault.names import validate_gun
from keyvault.trust import pem, pkcs8
from keyvault.trust.keyid import PrivateKey, algorithm_of, private_key_id
from keyvault.trust.model import KeyFile, Layout

DEFAULT_GUNS = ("example.com/sample/app", "example.com/sample/web")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def notary_key_file(key: PrivateKey, role: str | None, gun: str | None, passphrase: str) -> bytes:
    """The bytes notary would write for ``key`` (``ConvertPrivateKeyToPKCS8``).

    ``role`` None leaves the ``role:`` header out, as in a file another tool wrote.
    """
    info = pkcs8.notary_private_key_info(key)
    headers: dict[str, str] = {"role": role} if role is not None else {}
    if gun:
        headers["gun"] = gun
    if passphrase == "":
        return pem.encode("PRIVATE KEY", info, headers)
    return pem.encode("ENCRYPTED PRIVATE KEY", pkcs8.encrypt_notary(info, passphrase), headers)


def write_sample_trust_dir(
    path: Path,
    passphrases: Mapping[str, str],
    guns: Sequence[str] = DEFAULT_GUNS,
) -> tuple[KeyFile, ...]:
    """Create ``path/private/`` with a root key and targets + snapshot keys per GUN."""
    for name in guns:
        validate_gun(name)
    missing = [r for r in ("root", "targets", "snapshot") if r not in passphrases]
    if missing:
        raise UsageError(f"no passphrase given for the {', '.join(missing)} role(s)")
    plan: list[tuple[str, str | None]] = [("root", None)]
    plan += [(role, name) for name in guns for role in ("targets", "snapshot")]
    private = _make_dirs(path)
    written: list[KeyFile] = []
    try:
        for role, gun in plan:
            key = ec.generate_private_key(ec.SECP256R1())
            key_id = private_key_id(key)
            data = notary_key_file(key, role, gun, passphrases[role])
            fsutil.write_file_atomic(private, f"{key_id}.key", data, mode=0o600, exclusive=True)
            encrypted = passphrases[role] != ""
            written.append(
                KeyFile(
                    key_id=key_id,
                    role=role,
                    gun=gun,  # as scan reports it
                    algorithm=None if encrypted else algorithm_of(key),
                    relpath=f"{key_id}.key",
                    mode=0o600,
                    layout=Layout.CURRENT,
                    encrypted=encrypted,
                    data=data,
                )
            )
    finally:
        os.close(private)
    return tuple(sorted(written, key=lambda k: k.relpath))


def _make_dirs(path: Path) -> int:
    """``path`` and ``path/private`` (0700 when created here); the latter's descriptor."""
    try:
        fsutil.make_private_dirs(path)
        top = os.open(path, _DIR_FLAGS)
        try:
            try:
                os.mkdir("private", 0o700, dir_fd=top)
                created = True
            except FileExistsError:
                created = False
            private = os.open("private", _DIR_FLAGS, dir_fd=top)
            if created:
                os.fchmod(private, 0o700)  # exact, whatever the umask
            return private
        finally:
            os.close(top)
    except OSError as exc:
        raise LocalIOError(
            f"cannot create the sample trust directory {path}: {exc.strerror or exc}"
        ) from None
