"""T1: whoever reads the store (a leaked bucket, a copied disk) learns names, not keys.

The store holds each key file sealed under its own data key, and that data
key only wrapped for the configured wrappers; what is in clear is the object
name and the header: team, GUN, role, key ID, the file's name, mode, size,
algorithm and SHA-256, and when it was sealed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from fixtures.host import tree

from cli.conftest import KV
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "a passphrase nobody may read"
GUN = "example.com/team-a/app"
HEADER = {
    "format",
    "version",
    "team",
    "gun",
    "role",
    "key_id",
    "algorithm",
    "created",
    "source_name",
    "source_mode",
    "size",
    "sha256",
}


def _secrets_of(key: KeyFile) -> list[bytes]:
    """The key file, its PEM body and the DER under it: none may be in the store."""
    body = b"".join(
        line
        for line in key.data.splitlines()
        if line and not line.startswith(b"-----") and b":" not in line
    )
    der = base64.b64decode(body)
    return [key.data, body, der, der[16:48], base64.b64encode(der[16:48])]


@pytest.mark.proves("T1")
def test_the_store_holds_no_key_byte_and_only_the_documented_facts(
    kv: KV, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    init = kv("--json", "init").json()
    assert kv("backup").code == 0
    store = Path(init["store"].removeprefix("file://"))
    files = [p for p in store.rglob("*") if p.is_file()]
    everything = b"".join(p.read_bytes() for p in files)
    identity = Path(init["identity_file"]).read_text()
    (age_secret,) = re.findall(r"AGE-SECRET-KEY-1[0-9A-Z]+", identity)
    sealer_key = Path(init["sealer_file"]).read_bytes()
    for secret in [PASS.encode(), age_secret.encode(), sealer_key]:
        assert secret not in everything
    for key in keys:
        for secret in _secrets_of(key):
            assert secret not in everything, key.relpath

    envelopes = {}
    for path in files:
        doc = json.loads(path.read_bytes())
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("header"), dict)
            and "key_id" in doc["header"]
        ):
            envelopes[doc["header"]["key_id"]] = (path, doc)
    assert set(envelopes) == {k.key_id for k in keys}
    for key in keys:
        path, doc = envelopes[key.key_id]
        header = doc["header"]
        assert set(header) == HEADER
        assert header["sha256"] == hashlib.sha256(key.data).hexdigest()
        assert header["source_name"] == Path(key.relpath).name
        assert (header["team"], header["role"], header["gun"]) == (
            "default",
            key.role,
            None if key.role == "root" else GUN,
        )
        assert key.key_id in str(path) and set(str(path.relative_to(store)).split("/")) <= {
            "objects",
            "v1",
            "teams",
            "default",
            "root",
            "guns",
            *GUN.split("/"),
            key.role,
            f"{key.key_id}.json",
            "0000000001",
        }
        assert [w["uri"] for w in doc["wrapped_keys"]] == init["wrappers"]

    # An outsider with a copy of the store, even trusting its sealer, opens nothing.
    outsider = tmp_path / "outsider"
    outsider.mkdir()
    for var, sub in (
        ("HOME", ""),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        monkeypatch.setenv(var, str(outsider / sub))
    assert kv("init").code == 0
    before = tree(store)
    run = kv(
        "--store",
        f"file://{store}",
        "--trust-sealer",
        init["sealer"],
        "--trust-dir",
        outsider / "restored",
        "restore",
        "--all",
    )
    assert run.code == 4, run.err
    assert "is not wrapped by any wrapper you hold" in run.err
    assert not (outsider / "restored").exists() and tree(store) == before
