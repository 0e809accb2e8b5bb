"""Shared fixtures for the whole test suite.

Keep each group under its own heading. Expensive things are built once per
session as templates and copied into ``tmp_path`` for each test, so a test may
change its copy freely.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures.answer_proxy import AnswerProxy, closing_all
from fixtures.components import find_tool
from notarykit import (
    PASSPHRASES,
    BuiltTrustDir,
    Notary,
    build_loose_trust_dir,
    build_notary_trust_dir,
    to_legacy_layout,
    to_v01_layout,
)

from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

# Real servers on 127.0.0.1, one module per component (tests/fixtures/),
# host-level fixtures (a directory shared with another user), and the check
# that fails a run on a skip docs/testing.md does not allow.
pytest_plugins = [
    "fixtures.skips",
    "fixtures.host",
    "fixtures.s3",
    "fixtures.kms",
    "fixtures.kms_responder",
    "fixtures.vault",
    "fixtures.softhsm",
    "fixtures.notary_server",
    "fixtures.token_issuer",
]

# --- trust directories (keyvault.trust) ---------------------------------------

SAMPLE_PASSPHRASES = {r: PASSPHRASES[r] for r in ("root", "targets", "snapshot")}


@pytest.fixture(scope="session")
def notary(tmp_path_factory: pytest.TempPathFactory) -> Notary:
    """The real notary binary (a missing one fails: fixtures.components)."""
    return Notary(find_tool("notary"), home=tmp_path_factory.mktemp("notary-home"))


@pytest.fixture(scope="session")
def notary_template(notary: Notary, tmp_path_factory: pytest.TempPathFactory) -> BuiltTrustDir:
    return build_notary_trust_dir(notary, tmp_path_factory.mktemp("tpl") / "current")


@pytest.fixture(scope="session")
def legacy_template(
    notary_template: BuiltTrustDir, tmp_path_factory: pytest.TempPathFactory
) -> BuiltTrustDir:
    return to_legacy_layout(notary_template, tmp_path_factory.mktemp("tpl") / "legacy")


@pytest.fixture(scope="session")
def legacy_v01_template(
    notary_template: BuiltTrustDir, tmp_path_factory: pytest.TempPathFactory
) -> BuiltTrustDir:
    return to_v01_layout(notary_template, tmp_path_factory.mktemp("tpl") / "v01")


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[KeyFile, ...]]:
    path = tmp_path_factory.mktemp("tpl") / "sample"
    return path, write_sample_trust_dir(path, SAMPLE_PASSPHRASES)


@pytest.fixture(scope="session")
def loose_template(notary: Notary, tmp_path_factory: pytest.TempPathFactory) -> BuiltTrustDir:
    return build_loose_trust_dir(notary, tmp_path_factory.mktemp("tpl") / "loose")


@pytest.fixture
def loose_trust_dir(loose_template: BuiltTrustDir, tmp_path: Path) -> BuiltTrustDir:
    """Notary's GUN-less targets/snapshot keys and role-less keys, beside a root key."""
    return loose_template.copy_to(tmp_path / "loose-trust")


@pytest.fixture
def notary_trust_dir(notary_template: BuiltTrustDir, tmp_path: Path) -> BuiltTrustDir:
    """A fresh copy of a notary-made trust dir (current layout)."""
    return notary_template.copy_to(tmp_path / "trust")


@pytest.fixture
def legacy_trust_dir(legacy_template: BuiltTrustDir, tmp_path: Path) -> BuiltTrustDir:
    """The same keys in the 0.2/0.3 layout (root_keys/, tuf_keys/<gun>/, role: headers)."""
    return legacy_template.copy_to(tmp_path / "legacy-trust")


@pytest.fixture
def legacy_v01_trust_dir(legacy_v01_template: BuiltTrustDir, tmp_path: Path) -> BuiltTrustDir:
    """The same keys (minus delegations) in the 0.1 layout (<id>_<role>.key, no headers)."""
    return legacy_v01_template.copy_to(tmp_path / "v01-trust")


@pytest.fixture
def sample_trust_dir(
    sample_template: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> tuple[Path, tuple[KeyFile, ...]]:
    """A copy of ``write_sample_trust_dir``'s output and the keys it reported."""
    src, keys = sample_template
    dst = tmp_path / "sample"
    shutil.copytree(src, dst)
    return dst, keys


@pytest.fixture
def make_trust_dir(tmp_path: Path) -> Callable[[dict[str, bytes]], Path]:
    """Build a trust dir from {relpath under private/: bytes}; files 0600, dirs 0700."""

    def build(files: dict[str, bytes]) -> Path:
        root = tmp_path / "made"
        (root / "private").mkdir(parents=True, mode=0o700)
        for relpath, data in files.items():
            path = root / "private" / relpath
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_bytes(data)
            path.chmod(0o600)
        return root

    return build


@pytest.fixture
def proxies() -> Iterator[list[AnswerProxy]]:
    """Answer proxies a test makes (fixtures.answer_proxy), closed after it."""
    with closing_all() as made:
        yield made


def pytest_configure(config: pytest.Config) -> None:
    """Registers ``proves``: which SECURITY.md IDs a test proves (docs/testing.md).

    Also gives SIGINT its Python handler back when the suite was started with SIGINT
    ignored (a shell's background job, ``nohup``): the tests that interrupt a restore
    or a drill, in this process or in a child (which inherits an ignored SIGINT), would
    otherwise see nothing happen.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers",
        "proves(*ids): the SECURITY.md threat (T), fault (F) and bad-input (B) "
        "IDs this test proves",
    )
