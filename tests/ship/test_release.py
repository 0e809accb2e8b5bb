"""The release checklist's build-and-try step, for real (issue 22; docs/releasing.md).

``scripts/release_check.py`` builds the sdist and the wheel, installs the wheel
offline in a clean virtualenv and runs ``keyvault quickstart`` there; this
module runs it once, as the checklist does, then looks at what it built with
its own eyes: LICENSE in both files, the version from its one place, the
changelog's section. The checks' own failures are shown on doctored copies.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from fixtures.components import require_module

from keyvault import __version__

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "release_check.py"


def _script() -> ModuleType:
    """scripts/release_check.py as a module (its checks, called on doctored inputs)."""
    spec = importlib.util.spec_from_file_location("release_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Released:
    out: Path
    stdout: str

    @property
    def sdist(self) -> Path:
        return self.out / "dist" / f"keyvault-{__version__}.tar.gz"

    @property
    def wheel(self) -> Path:
        return self.out / "dist" / f"keyvault-{__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    """The checklist's command, run once: ``python scripts/release_check.py --out DIR``."""
    require_module("build", "pip package build, in the test extra")
    out = tmp_path_factory.mktemp("release")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return Released(out, run.stdout)


def test_the_wheel_runs_quickstart_in_a_clean_virtualenv(released: Released) -> None:
    """No pip, no system site-packages, not the checkout: and quickstart backed keys up."""
    assert released.stdout.startswith("ok: ")
    venv = released.out / "venv"
    config = (venv / "pyvenv.cfg").read_text()
    assert re.search(r"^include-system-site-packages = false$", config, re.MULTILINE)
    assert not (venv / "bin" / "pip").exists()
    installed = list(venv.glob("lib/python*/site-packages/keyvault/__init__.py"))
    assert len(installed) == 1 and f'__version__ = "{__version__}"' in installed[0].read_text()
    assert not list(venv.glob("lib/python*/site-packages/*.pth")), "an editable or .pth path"
    store = released.out / "home" / ".local" / "share" / "keyvault" / "store"
    assert (
        len(
            [
                p
                for p in store.rglob("*")
                if p.is_file() and "/v1/teams/" in p.as_posix() and "/audit/" not in p.as_posix()
            ]
        )
        >= 5
    )  # the sample's keys, sealed


def test_sdist_and_wheel_ship_the_license(released: Released) -> None:
    license_text = (REPO / "LICENSE").read_bytes()
    assert license_text.lstrip().startswith(b"Apache License\n")
    assert b"Version 2.0, January 2004" in license_text
    assert b"END OF TERMS AND CONDITIONS" in license_text
    with tarfile.open(released.sdist) as tf:
        member = tf.extractfile(f"keyvault-{__version__}/LICENSE")
        assert member is not None and member.read() == license_text
        pkg_info = tf.extractfile(f"keyvault-{__version__}/PKG-INFO")
        assert pkg_info is not None
        sdist_meta = pkg_info.read().decode()
    with zipfile.ZipFile(released.wheel) as zf:
        assert zf.read(f"keyvault-{__version__}.dist-info/licenses/LICENSE") == license_text
        wheel_meta = zf.read(f"keyvault-{__version__}.dist-info/METADATA").decode()
    for meta in (sdist_meta, wheel_meta):
        assert "License-Expression: Apache-2.0" in meta
        assert "License-File: LICENSE" in meta
        assert f"\nVersion: {__version__}\n" in meta


def test_the_checks_refuse_a_missing_or_foreign_license(
    released: Released, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = _script()
    check.check_dists(released.sdist, released.wheel, __version__)  # the real ones pass
    stripped = tmp_path / released.wheel.name
    with zipfile.ZipFile(released.wheel) as src, zipfile.ZipFile(stripped, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("/LICENSE"):
                dst.writestr(item, src.read(item))
    with pytest.raises(check.CheckFailedError, match="LICENSE missing"):
        check.check_dists(released.sdist, stripped, __version__)
    with pytest.raises(check.CheckFailedError, match="does not carry version"):
        check.check_dists(released.sdist, released.wheel, "9.9.9")
    other = tmp_path / "repo"
    other.mkdir()
    (other / "LICENSE").write_text("MIT License\n")
    monkeypatch.setattr(check, "REPO", other)
    with pytest.raises(check.CheckFailedError, match="not the repository's"):
        check.check_dists(released.sdist, released.wheel, __version__)


def test_the_version_lives_in_one_place() -> None:
    """pyproject reads keyvault/__init__.py; no other file of the package spells it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "keyvault/__init__.py"
    assert _script().source_version() == __version__
    spelled = [
        str(p.relative_to(REPO))
        for p in [*REPO.glob("keyvault/**/*.py"), REPO / "pyproject.toml", *REPO.glob("scripts/*")]
        if p.is_file() and re.search(rf"(?<![\d.]){re.escape(__version__)}(?![\d.])", p.read_text())
    ]
    assert spelled == ["keyvault/__init__.py"]
    readers = [
        str(p.relative_to(REPO))
        for p in REPO.glob("keyvault/**/*.py")
        if 'version("keyvault")' in p.read_text()
    ]
    assert readers == []  # importlib.metadata's copy can be stale in an editable install


KEEP_A_CHANGELOG_TYPES = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_changelog_keeps_a_changelog() -> None:
    """Unreleased first, then dated releases newest first, the six kinds of change."""
    text = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert releases[0] == "[Unreleased]"
    dated = [re.fullmatch(r"\[(\d+)\.(\d+)\.(\d+)\] - \d{4}-\d{2}-\d{2}", r) for r in releases[1:]]
    assert dated and all(dated), releases
    versions = [tuple(int(n) for n in m.groups()) for m in dated if m]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    kinds = set(re.findall(r"^### (.+)$", text, re.MULTILINE))
    assert kinds <= KEEP_A_CHANGELOG_TYPES, kinds - KEEP_A_CHANGELOG_TYPES
    assert f"## [{__version__}] - " in text  # the version being built has its section
    _script().check_changelog(__version__)


def test_the_changelog_check_refuses_an_undated_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = _script()
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n## [0.2.0]\n")
    monkeypatch.setattr(check, "REPO", tmp_path)
    with pytest.raises(check.CheckFailedError, match=r"no '## \[0.2.0\] - YYYY-MM-DD' section"):
        check.check_changelog("0.2.0")


def test_the_changelog_tells_upgraders_what_to_do() -> None:
    """The v1 -> v2 notes name the commands that exist, with options where they are taken."""
    unreleased = (REPO / "CHANGELOG.md").read_text().split("## [Unreleased]", 1)[1]
    unreleased = unreleased.split("\n## [", 1)[0]
    for needed in (
        "keyvault --allow-unsigned rewrap --all --reseal",
        "keyvault sealer show",
        "[sealing] trusted",
        "keyvault verify --all",
        "--trust-sealer",
        "docs/recover.py --allow-unsigned",
    ):
        assert needed in unreleased, needed

    def helped(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "keyvault", *args, "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
            env={
                "PYTHONPATH": str(REPO),
                "PATH": "/usr/bin:/bin",
                "COLUMNS": "200",
                "HOME": str(REPO / "nonexistent"),
            },
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert "--allow-unsigned" in helped() and "--trust-sealer" in helped()
    rewrap = helped("rewrap")  # --allow-unsigned is global: before the command, not after
    assert "--reseal" in rewrap and not re.search(r"^  --allow-unsigned", rewrap, re.MULTILINE)
    assert "show" in helped("sealer")
