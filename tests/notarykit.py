"""Drive the real ``notary`` binary, offline, to build trust directories for tests.

Everything here runs notary with an argument list (no shell), its own ``-d``
trust directory and its own ``HOME`` (so no user config or key is ever
touched), and passphrases only through the environment. Nothing here uses
keyvault's code: the expected key IDs come from notary's own file names and
``key list``, and the legacy layouts are made with openssl, so the tests
compare keyvault against independent implementations.

Builders:

* ``build_notary_trust_dir``: a root key (``key generate``), targets and
  snapshot keys for two GUNs (``key import --role R --gun G`` of fresh
  unencrypted keys), an ECDSA delegation key (``--role targets/releases``)
  and an RSA key (``--role alice``, like ``docker trust key load``);
* ``to_legacy_layout``: the 0.2/0.3 layout, ``root_keys/<id>.key`` and
  ``tuf_keys/<gun>/<id>.key`` with ``role:`` headers;
* ``to_v01_layout``: the 0.1 layout, ``<id>_<role>.key`` without headers,
  RFC 1421-encrypted ``EC/RSA PRIVATE KEY`` blocks (made with openssl).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fixtures.components import find_tool

GUN_A = "example.com/team-a/app"
GUN_B = "example.com/team-b/web"
#: Passphrases per notary alias (root, targets, snapshot, delegation).
PASSPHRASES = {
    "root": "root-passphrase-1",
    "targets": "targets-passphrase-2",
    "snapshot": "snapshot-passphrase-3",
    "delegation": "delegation-passphrase-4",
}
ENV_NAMES = {
    "root": "NOTARY_ROOT_PASSPHRASE",
    "targets": "NOTARY_TARGETS_PASSPHRASE",
    "snapshot": "NOTARY_SNAPSHOT_PASSPHRASE",
    "delegation": "NOTARY_DELEGATION_PASSPHRASE",
}

KeyTriple = tuple[str, str | None, str | None]  # (key ID, role or None, GUN or None)


def passphrase_env(passphrases: Mapping[str, str] = PASSPHRASES) -> dict[str, str]:
    """The NOTARY_*_PASSPHRASE variables for ``passphrases`` (alias -> passphrase)."""
    return {ENV_NAMES[alias]: value for alias, value in passphrases.items()}


def passphrase_of(role: str | None, passphrases: Mapping[str, str] = PASSPHRASES) -> str:
    return (
        passphrases[role] if role in ("root", "targets", "snapshot") else passphrases["delegation"]
    )


@dataclass
class Notary:
    """Runs one notary binary with an isolated HOME and the passphrases in the env."""

    binary: str
    home: Path
    passphrases: Mapping[str, str] = field(default_factory=lambda: dict(PASSPHRASES))

    def run(
        self, trust_dir: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            **passphrase_env(self.passphrases),
            **(env or {}),
        }
        result = subprocess.run(
            [self.binary, "-d", str(trust_dir), *args],
            env=full_env,
            text=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"notary {' '.join(args)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}"
            )
        return result

    def generate_root(self, trust_dir: Path) -> str:
        out = self.run(trust_dir, "key", "generate", "ecdsa", "--role", "root").stdout
        match = re.search(r"keyID: ([0-9a-f]{64})", out)
        assert match, out
        return match.group(1)

    def generate(self, trust_dir: Path, role: str) -> str:
        """``notary key generate --role R``: notary's own key, no ``gun:`` header."""
        out = self.run(trust_dir, "key", "generate", "ecdsa", "--role", role).stdout
        match = re.search(r"keyID: ([0-9a-f]{64})", out)
        assert match, out
        return match.group(1)

    def import_key(self, trust_dir: Path, pem: bytes, role: str, gun: str | None = None) -> str:
        """Import an unencrypted PEM key; returns the new file's name (notary's key ID)."""
        before = set(_key_names(trust_dir))
        with tempfile.TemporaryDirectory() as scratch:
            source = Path(scratch) / "import.pem"
            source.write_bytes(pem)
            source.chmod(0o600)
            args = ["key", "import", str(source), "--role", role]
            self.run(trust_dir, *args, *(["--gun", gun] if gun else []))
        (new,) = set(_key_names(trust_dir)) - before
        return new

    def key_list(self, trust_dir: Path) -> set[KeyTriple]:
        """``notary key list`` parsed into (key ID, role, GUN) triples."""
        return parse_key_list(self.run(trust_dir, "key", "list").stdout)

    def can_decrypt(
        self, trust_dir: Path, key_id: str, passphrases: Mapping[str, str] | None = None
    ) -> bool:
        """Whether notary decrypts the key, on a copy (``key passwd`` rewrites the file).

        ``key passwd`` decrypts with the role's passphrase and stores the key
        again under the ID notary computes, so success with the file set
        unchanged also proves notary computes the file's name as the ID.
        """
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "trust"
            shutil.copytree(trust_dir, copy, symlinks=True)
            before = set(_key_names(copy))
            runner = replace(self, passphrases=passphrases or self.passphrases)
            result = runner.run(copy, "key", "passwd", key_id, check=False)
            return result.returncode == 0 and set(_key_names(copy)) == before


def parse_key_list(output: str) -> set[KeyTriple]:
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ROLE"))
    head = lines[header]
    gun_at, id_at, loc_at = head.index("GUN"), head.index("KEY ID"), head.index("LOCATION")
    triples: set[KeyTriple] = set()
    for line in lines[header + 2 :]:
        if not line.strip():
            continue
        role = line[:gun_at].strip() or None  # a key without a role: header
        gun = line[gun_at:id_at].strip() or None
        triples.add((line[id_at:loc_at].strip(), role, gun))
    return triples


def _key_names(trust_dir: Path) -> list[str]:
    private = trust_dir / "private"
    return [p.stem for p in private.rglob("*.key")] if private.is_dir() else []


def armour(label: str) -> tuple[str, str]:
    """The BEGIN and END lines of a PEM block of ``label`` (e.g. "EC PRIVATE KEY").

    Tests that need only a block's shape (its bodies are placeholders) build the lines
    here, so no source file holds a private-key header: real key fixtures are generated
    at test time (fresh_ec_pem, the notary binary)."""
    return f"-----BEGIN {label}-----", f"-----END {label}-----"


def fresh_ec_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def fresh_rsa_pem(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class BuiltTrustDir:
    """A trust directory and the keys in it, as notary named and listed them."""

    path: Path
    keys: frozenset[KeyTriple]
    algorithms: Mapping[str, str]  # key ID -> "ecdsa" / "rsa"

    def copy_to(self, dst: Path) -> BuiltTrustDir:
        shutil.copytree(self.path, dst, symlinks=True)
        return replace(self, path=dst)

    def ids(self, role: str | None = None) -> list[str]:
        return sorted(k for k, r, _ in self.keys if role is None or r == role)


def build_notary_trust_dir(notary: Notary, path: Path) -> BuiltTrustDir:
    """Root key, targets + snapshot for two GUNs, an ECDSA delegation key and an RSA key."""
    keys: set[KeyTriple] = {(notary.generate_root(path), "root", None)}
    algorithms: dict[str, str] = {}
    for gun in (GUN_A, GUN_B):
        for role in ("targets", "snapshot"):
            keys.add((notary.import_key(path, fresh_ec_pem(), role, gun), role, gun))
    keys.add(
        (notary.import_key(path, fresh_ec_pem(), "targets/releases"), "targets/releases", None)
    )
    rsa_id = notary.import_key(path, fresh_rsa_pem(), "alice")
    keys.add((rsa_id, "alice", None))
    for key_id, _, _ in keys:
        algorithms[key_id] = "rsa" if key_id == rsa_id else "ecdsa"
    listed = notary.key_list(path)
    assert listed == keys, f"notary lists {listed}, built {keys}"
    return BuiltTrustDir(path, frozenset(keys), algorithms)


def build_loose_trust_dir(notary: Notary, path: Path) -> BuiltTrustDir:
    """Keys notary loads by ID though a fact is missing, beside a root key.

    Targets and snapshot keys from ``notary key generate --role R`` (no ``gun:``
    header: notary 0.7 writes none), a delegation key and a GUN's targets key
    whose ``role:`` header was removed (as another tool writes them; notary
    still lists them and signs with them by ID).
    """
    keys: set[KeyTriple] = {(notary.generate_root(path), "root", None)}
    for role in ("targets", "snapshot"):
        keys.add((notary.generate(path, role), role, None))
    for key_id, gun in (
        (notary.generate(path, "alice"), None),
        (notary.import_key(path, fresh_ec_pem(), "targets", GUN_A), GUN_A),
    ):
        file = path / "private" / f"{key_id}.key"
        data = file.read_bytes()
        stripped = re.sub(rb"^role: .*\n", b"", data, flags=re.M)
        assert stripped != data
        file.write_bytes(stripped)
        keys.add((key_id, None, gun))
    listed = notary.key_list(path)
    assert listed == keys, f"notary lists {listed}, built {keys}"
    return BuiltTrustDir(path, frozenset(keys), {k: "ecdsa" for k, _, _ in keys})


def _headers(data: bytes) -> dict[str, str]:
    return {
        m.group(1).decode(): m.group(2).decode()
        for m in re.finditer(rb"^([A-Za-z-]+): (.*)$", data, flags=re.M)
    }


def _strip_headers(data: bytes) -> bytes:
    return re.sub(rb"^[A-Za-z-]+: .*\n", b"", data, flags=re.M).replace(b"-----\n\n", b"-----\n")


def _copy_without_private(src: Path, dst: Path) -> None:
    shutil.copytree(
        src, dst, symlinks=True, ignore=lambda d, names: ["private"] if Path(d) == src else []
    )
    (dst / "private").mkdir(mode=0o700)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def to_legacy_layout(built: BuiltTrustDir, dst: Path) -> BuiltTrustDir:
    """notary 0.2/0.3: ``root_keys/<id>.key``, ``tuf_keys/<gun>/<id>.key`` (role: header only)."""
    _copy_without_private(built.path, dst)
    for key_id, role, gun in built.keys:
        data = (built.path / "private" / f"{key_id}.key").read_bytes()
        if role == "root":
            target = Path("root_keys") / f"{key_id}.key"
        else:
            target = Path("tuf_keys", *(gun.split("/") if gun else [])) / f"{key_id}.key"
            data = re.sub(rb"^gun: .*\n", b"", data, flags=re.M)
        _write(dst / "private" / target, data)
    return replace(built, path=dst)


def to_v01_layout(
    built: BuiltTrustDir, dst: Path, passphrases: Mapping[str, str] = PASSPHRASES
) -> BuiltTrustDir:
    """notary 0.1: ``<id>_<role>.key`` names, no headers, RFC 1421 encryption (via openssl).

    Roles with a slash cannot be written in a 0.1 name; those keys are left out.
    """
    _copy_without_private(built.path, dst)
    kept: set[KeyTriple] = set()
    for key_id, role, gun in built.keys:
        if role is None or "/" in role:
            continue
        data = (built.path / "private" / f"{key_id}.key").read_bytes()
        legacy = _openssl_traditional(_strip_headers(data), passphrase_of(role, passphrases))
        folder = ["root_keys"] if role == "root" else ["tuf_keys", *(gun.split("/") if gun else [])]
        _write(dst.joinpath("private", *folder, f"{key_id}_{role}.key"), legacy)
        kept.add((key_id, role, gun))
    return replace(built, path=dst, keys=frozenset(kept))


def _openssl_traditional(pkcs8_pem: bytes, passphrase: str) -> bytes:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KV_PW": passphrase}
    result = subprocess.run(
        [
            find_tool("openssl"),
            "pkey",
            "-passin",
            "env:KV_PW",
            "-traditional",
            "-aes256",
            "-passout",
            "env:KV_PW",
        ],
        input=pkcs8_pem,
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert b"DEK-Info: AES-256-CBC" in result.stdout
    return result.stdout


def triples(keys: Iterable[object]) -> set[KeyTriple]:
    """(key ID, role, GUN) of KeyFile-like objects."""
    return {(k.key_id, k.role, k.gun) for k in keys}  # type: ignore[attr-defined]
