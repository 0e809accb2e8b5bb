"""Break-glass: split the age recovery identity into SLIP-39 shares, and rebuild it.

The identity's 32-byte X25519 secret is the SLIP-39 master secret (the
standard hardware wallets use: 33-word shares with a checksum that catches
a mistyped word). With M of N shares anyone can rebuild the identity and
restore every key it wraps without any KMS or HSM, so the shares go to
different people and places.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from keyvault import fsutil
from keyvault.errors import ConflictError, InvalidInputError, UsageError

IDENTITY_HRP = "age-secret-key-"


@dataclass(frozen=True)
class Share:
    index: int
    total: int
    threshold: int
    words: str = field(repr=False)


def _identity_secret(identity_text: str) -> bytes:
    import bech32

    hrp, data = bech32.bech32_decode(identity_text.strip())
    raw = bech32.convertbits(data, 5, 8, False) if data is not None else None
    if hrp != IDENTITY_HRP or raw is None or len(raw) != 32:
        raise InvalidInputError("not an age X25519 identity (AGE-SECRET-KEY-1...)")
    return bytes(raw)


def _identity_text(secret: bytes) -> str:
    import bech32

    words = bech32.convertbits(secret, 8, 5)
    assert words is not None  # 8-to-5 bit conversion with padding always succeeds
    encoded = bech32.bech32_encode(IDENTITY_HRP, words)
    return str(encoded).upper()


def split_identity(identity_file: Path, *, shares: int, threshold: int) -> tuple[str, list[Share]]:
    """The identity's recipient and its N shares, any M of which rebuild it."""
    import shamir_mnemonic

    from keyvault.wrappers.age import read_identity_file

    if not 1 <= threshold <= shares <= 16 or (threshold == 1 and shares > 1):
        raise UsageError(
            "choose 2 <= threshold <= shares <= 16 (or 1 of 1)",
            hint="e.g. --shares 5 --threshold 3",
        )
    identities = read_identity_file(identity_file)
    if len(identities) != 1:
        raise InvalidInputError(f"{identity_file} must hold exactly one identity to split")
    identity = identities[0]
    secret = _identity_secret(str(identity))
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, shares)], secret)
    recipient = str(identity.to_public())
    return recipient, [Share(i + 1, shares, threshold, words) for i, words in enumerate(groups[0])]


def write_share_pages(
    directory: Path, recipient: str, shares: Sequence[Share], sealers: Sequence[str] = ()
) -> list[Path]:
    """One printable page per share, each 0600 in a new 0700 directory; never overwrites.

    Each page also carries the sealer pins of the identity file, so whoever
    rebuilds the identity from shares alone knows whose backups to trust.
    """
    from keyvault.sealing import pin_lines

    pins = pin_lines(sealers).splitlines()
    rebuild = "keyvault recovery combine --out <identity file>" + "".join(
        f" --trust-sealer {line.split()[-1]}" for line in pins
    )
    if directory.exists():
        raise ConflictError(f"{directory} already exists; choose a new directory for the shares")
    fsutil.ensure_private_dir(directory)
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    paths = []
    for share in shares:
        words = share.words.split()
        lines = [
            "keyvault recovery share",
            "",
            f"Share {share.index} of {share.total}. Any {share.threshold} shares rebuild the "
            "recovery identity of:",
            f"  {recipient}",
            f"Made {created}. Keep this page offline, apart from the other shares.",
            f"Rebuild with: {rebuild}",
            "Backups are trusted only if sealed by (keep these lines with the share):",
            *(pins or ["  (no sealer pinned in the identity file)"]),
            "",
            *[f"{n:2d}. {word}" for n, word in enumerate(words, start=1)],
            "",
        ]
        name = f"share-{share.index}-of-{share.total}.txt"
        fsutil.write_file_atomic(
            directory, name, "\n".join(lines).encode(), mode=0o600, exclusive=True
        )
        paths.append(directory / name)
    return paths


def shares_needed(mnemonic: str) -> int | None:
    """How many shares rebuild the identity, as a share says it (None: not a valid share;
    combining then names the problem)."""
    import shamir_mnemonic

    try:
        share = shamir_mnemonic.Share.from_mnemonic(" ".join(mnemonic.lower().split()))
    except shamir_mnemonic.MnemonicError:
        return None
    return int(share.group_parameters().member_threshold)


def combine_shares(mnemonics: Sequence[str]) -> str:
    """The identity (AGE-SECRET-KEY-1...) rebuilt from shares; clear errors otherwise."""
    import shamir_mnemonic

    cleaned = [" ".join(m.lower().split()) for m in mnemonics if m.strip()]
    for number, mnemonic in enumerate(cleaned, start=1):
        try:
            shamir_mnemonic.Share.from_mnemonic(mnemonic)
        except shamir_mnemonic.MnemonicError as exc:
            raise InvalidInputError(
                f"share {number} is not valid ({_reason(exc)}); "
                "check it for a mistyped or missing word"
            ) from None
    try:
        secret = shamir_mnemonic.combine_mnemonics(cleaned)
    except shamir_mnemonic.MnemonicError as exc:
        raise InvalidInputError(
            f"cannot rebuild the identity: {_reason(exc)}",
            hint="give as many different shares as the threshold on each page says",
        ) from None
    if len(secret) != 32:
        raise InvalidInputError("these shares do not hold an age identity")
    return _identity_text(secret)


def _reason(exc: Exception) -> str:
    """shamir-mnemonic's message without the share words it quotes (they are secret)."""
    text = str(exc).split("\n")[0][:200]
    return re.sub(r"\"[^\"]*\"|'[^']*'", "(words withheld)", text).rstrip(".")


def write_identity(path: Path, identity_text: str, sealers: Sequence[str] = ()) -> str:
    """Write a rebuilt identity 0600 (never overwriting), with its sealer pins; its recipient."""
    import pyrage

    from keyvault.sealing import pin_lines

    identity = pyrage.x25519.Identity.from_str(identity_text)
    recipient = str(identity.to_public())
    text = (
        f"# rebuilt from SLIP-39 shares\n# public key: {recipient}\n{pin_lines(sealers)}"
        f"{identity_text}\n"
    )
    fsutil.ensure_private_dir(path.parent)
    fsutil.write_file_atomic(
        path.parent, path.name, text.encode("ascii"), mode=0o600, exclusive=True
    )
    return recipient
