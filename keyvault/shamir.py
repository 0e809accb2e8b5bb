"""Shamir secret sharing over GF(2^8), byte-wise, for threshold groups of wrappers.

A data key is split into N shares so that any M of them rebuild it and fewer
reveal nothing about it: each byte of the secret is the constant term of its
own random polynomial of degree M-1, and share ``x`` (1..N) holds the
polynomial values at ``x``. The field is GF(2^8) with the AES polynomial
x^8 + x^4 + x^3 + x + 1. Combining does not authenticate: the envelope's key
commitment, checked right after, refuses a DEK rebuilt from a wrong share.

Written out here because the libraries that have it either share 16-byte
secrets only or keep it private; it is small, and tested against the field
axioms and every M-of-N subset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_EXP = [0] * 510
_LOG = [0] * 256


def _tables() -> None:
    value = 1
    for power in range(255):
        _EXP[power] = _EXP[power + 255] = value
        _LOG[value] = power
        # multiply by the generator 3 (x + 1): value * 2 (reduced) xor value
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= 0x11B
        value = doubled ^ value


_tables()


def mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[_LOG[a] - _LOG[b] + 255]


def split(secret: bytes, threshold: int, count: int) -> dict[int, bytes]:
    """``count`` shares (x = 1..count) of ``secret``; any ``threshold`` of them rebuild it."""
    if not 2 <= threshold <= count <= 16:
        raise ValueError("a threshold group needs 2 <= M <= N <= 16")
    coefficients = [os.urandom(len(secret)) for _ in range(threshold - 1)]
    shares: dict[int, bytes] = {}
    for x in range(1, count + 1):
        out = bytearray(len(secret))
        for i, byte in enumerate(secret):
            y, power = byte, 1
            for coefficient in coefficients:
                power = mul(power, x)
                y ^= mul(coefficient[i], power)
            out[i] = y
        shares[x] = bytes(out)
    return shares


def combine(shares: Mapping[int, bytes]) -> bytes:
    """The secret from ``threshold`` (or more) shares, by Lagrange interpolation at 0."""
    xs = list(shares)
    if len(xs) < 2 or len(set(xs)) != len(xs) or not all(1 <= x <= 255 for x in xs):
        raise ValueError("need at least two distinct shares with indices 1..255")
    size = {len(v) for v in shares.values()}
    if len(size) != 1:
        raise ValueError("shares differ in length")
    out = bytearray(size.pop())
    for x_i, y_i in shares.items():
        weight = 1
        for x_j in xs:
            if x_j != x_i:
                weight = mul(weight, div(x_j, x_j ^ x_i))
        for k, byte in enumerate(y_i):
            out[k] ^= mul(byte, weight)
    return bytes(out)
