"""Vault / OpenBao Transit as a sealing key: ``[sealing] key = "transit://mount/key-name"``.

The Transit key is a signing key of type ``ed25519`` (preferred) or
``ecdsa-p256``, not derived; its private half never leaves Vault.
:attr:`TransitSealer.key` is the public half of the key's latest version,
read once per process from ``<mount>/keys/<name>`` (ed25519: base64 of the
raw 32 bytes; ecdsa-p256: PEM; both become DER SubjectPublicKeyInfo). A key
of another type is refused with a UsageError before anything is signed.

Every signature of a process is made with that same version (``key_version``)
and the ``vault:vN:`` prefix of each answer must name it: a rotation during a
run cannot yield envelopes whose signature belongs to another public key.
Rotating the Transit key makes a new sealer (a new fingerprint) from the next
run on: pin it where you restore; envelopes sealed before keep verifying
under the old pin.

Signing is ``<mount>/sign/<name>`` of the message itself: pure Ed25519 for
ed25519 (no prehash), and for ecdsa-p256 ``hash_algorithm=sha2-256`` with
ASN.1 (DER) marshaling, what ``ecdsa-p256-sha256`` verifies
(:mod:`keyvault.sealing`).

Verifying needs no Vault: the envelope carries the public key, and a restore
checks its fingerprint against the pins. The token needs ``read`` on
``<mount>/keys/<name>`` and ``update`` on ``<mount>/sign/<name>``, nothing
more. Address and authentication are the ``[vault]`` ones, shared with the
KV store and the Transit wrapper (:mod:`keyvault.stores._vault_client`);
``[transit] address`` points at another Vault.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from keyvault.errors import BackendUnavailableError, IntegrityError, KeyvaultError, UsageError
from keyvault.keyring import b64
from keyvault.plugins import BackendOptions
from keyvault.sealers._backend import BackendSealer
from keyvault.sealing import ECDSA_P256, ED25519, MAX_SIGNATURE, SealerKey
from keyvault.stores import _vault_client as vc
from keyvault.stores.base import shown
from keyvault.wrappers.transit import TransitKeyNotFoundError, parse_transit_uri

#: Transit key type -> the sealer algorithm its signatures are.
KEY_TYPES: Mapping[str, str] = {"ed25519": ED25519, "ecdsa-p256": ECDSA_P256}
_SIGNATURE = re.compile(r"vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})")
_MAX_PUBLIC_KEY_TEXT = 4096


class TransitSealer(BackendSealer[int]):
    """Signs envelopes with one version of a Transit signing key; see the module docstring.

    What pins its public key is the key version it was read from.
    """

    _mount: str
    _name: str

    def sign(self, message: bytes) -> bytes:
        """A signature by the key version :attr:`key` is the public half of."""
        key, version = self._describe()
        ecdsa = {"hash_algorithm": "sha2-256", "marshaling_algorithm": "asn1"}
        extra = ecdsa if key.alg == ECDSA_P256 else {}
        resp = self._call(
            "sign with",
            "sign",
            lambda c: c.secrets.transit.sign_data(
                name=self._name,
                hash_input=b64(bytes(message)),
                key_version=version,
                mount_point=self._mount,
                **extra,
            ),
        )
        data = resp.get("data") if isinstance(resp, dict) else None
        text = data.get("signature") if isinstance(data, dict) else None
        match = _SIGNATURE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise BackendUnavailableError(f"Transit key {self._uri} returned no usable signature")
        if int(match.group(1)) != version:
            raise IntegrityError(
                f"Transit key {self._uri} signed with version {match.group(1)}, "
                f"not version {version} whose public key this run uses; refused"
            )
        signature = base64.b64decode(match.group(2))
        if not 0 < len(signature) <= MAX_SIGNATURE:
            raise BackendUnavailableError(f"Transit key {self._uri} returned no usable signature")
        return signature

    # -- internals -------------------------------------------------------------------

    def _connect(self, options: BackendOptions) -> vc.VaultClient:
        self._mount, self._name = parse_transit_uri(self._uri)
        self._uri = f"transit://{self._mount}/{self._name}"
        other = options.for_scheme("transit").get("address")
        if not isinstance(other, str | None):
            raise UsageError("[transit] address must be a string")
        return vc.acquire(options, address=other or None)

    def _release(self, client: Any) -> None:
        client.release()

    def _call(self, what: str, op: str, fn: Callable[[Any], Any]) -> Any:
        client: vc.VaultClient = self._live()
        try:
            return client.call(f"{what} Transit key", fn, path=f"{self._mount}/{op}/{self._name}")
        except vc.VaultRequestError as exc:
            self._refused(exc)

    def _public_key(self) -> tuple[SealerKey, int]:
        resp = self._call(
            "read",
            "keys",
            lambda c: c.secrets.transit.read_key(name=self._name, mount_point=self._mount),
        )
        data = resp.get("data") if isinstance(resp, dict) else None
        if not isinstance(data, dict):
            raise BackendUnavailableError(f"Vault answered no settings for {self._uri}")
        kind = data.get("type")
        if kind not in KEY_TYPES or data.get("derived") is True:
            derived = " derived" if data.get("derived") is True else ""
            raise UsageError(
                f"Transit key {self._uri} is a{derived} {shown(kind)} key; a sealing key must "
                "be a signing key of type ed25519 (preferred) or ecdsa-p256, not derived",
                hint=f"create one: bao write {self._mount}/keys/NAME type=ed25519",
            )
        version = data.get("latest_version")
        versions = data.get("keys")
        entry = versions.get(str(version)) if isinstance(versions, dict) else None
        public = entry.get("public_key") if isinstance(entry, dict) else None
        der = _spki(str(kind), public)
        if type(version) is not int or version < 1 or der is None:
            raise BackendUnavailableError(f"Vault answered no usable public key for {self._uri}")
        return SealerKey(KEY_TYPES[str(kind)], der), version

    def _refused(self, exc: vc.VaultRequestError) -> NoReturn:
        """A 400/404 from Transit as a typed error; Vault's own text is matched, not shown."""
        error: type[KeyvaultError] = UsageError
        what = f"refused the request (HTTP {exc.status})"
        hint = "a sealing key is a Transit key of type ed25519 or ecdsa-p256"
        if exc.no_route:
            error, what = vc.VaultMountNotFoundError, f"has no secrets engine at {self._mount}/"
            hint = f"enable Transit (bao secrets enable -path={self._mount} transit) or fix the URI"
        elif exc.status == 404 or exc.says("key not found"):
            error, what = TransitKeyNotFoundError, "does not exist"
            hint = f"create it: bao write {self._mount}/keys/{self._name} type=ed25519"
        elif exc.says("does not support signing"):
            what = "cannot sign"
        address = self._client.address if self._client is not None else "?"
        raise error(f"Transit key {self._uri} at {address} {what}", hint=hint) from None


def _spki(kind: str, public: object) -> bytes | None:
    """The DER SubjectPublicKeyInfo of Transit's public key text; None if it is not one."""
    if not isinstance(public, str) or not 0 < len(public) <= _MAX_PUBLIC_KEY_TEXT:
        return None
    try:
        if kind == "ed25519":
            key: Any = ed25519.Ed25519PublicKey.from_public_bytes(
                base64.b64decode(public, validate=True)
            )
        else:
            key = serialization.load_pem_public_key(public.encode("ascii"))
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, ec.SECP256R1
            ):
                return None
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error):
        return None
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


__all__ = ["KEY_TYPES", "TransitSealer"]
