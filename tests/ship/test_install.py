"""The wheel installs into a fresh virtual environment and works there (issue 11).

The wheel is built once per session. Installing it must not need the network
(CI and this machine have no reliable index), so each test environment is a
fresh ``venv --without-pip`` whose ``.pth`` file points at a directory of
already-installed dependencies, and pip runs with ``--no-index``: pip then
resolves the wheel's requirements, extras included, against what is really
present, exactly as ``pipx``/``uv tool`` would against an index.

Two dependency directories:

- ``full``: every distribution of the test interpreter (so ``[aws]``, ``[vault]``,
  ``[hsm]`` and ``[all]`` are satisfiable);
- ``core``: the same without boto3/botocore/s3transfer, hvac and python-pkcs11, i.e. a
  machine where keyvault was installed without extras: the SDKs are really absent,
  not hidden by an import hook.

The editable keyvault of the test interpreter is never visible in either (its
``.pth`` is not processed, and ``keyvault`` itself is left out of both directories).
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Top-level names (packages, modules, dist-info) that belong to the optional extras.
EXTRA_ONLY = re.compile(
    r"^(boto3|botocore|s3transfer|hvac|pkcs11|python_pkcs11)([-_.].*)?$", re.IGNORECASE
)
#: keyvault itself and its editable-install hooks: the wheel under test must be the only copy.
OWN = re.compile(r"^(_?_?editable\w*keyvault\w*|keyvault)([-_.].*)?$", re.IGNORECASE)


def _site_dirs() -> list[Path]:
    dirs = [
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
        *site.getsitepackages(),
    ]
    seen: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_dir() and p not in seen:
            seen.append(p)
    return seen


def _dependency_dir(target: Path, *, with_extras: bool) -> Path:
    """A directory of symlinks to the test interpreter's installed distributions."""
    target.mkdir()
    for sitedir in _site_dirs():
        for entry in sorted(sitedir.iterdir()):
            name = entry.name
            if name.endswith(".pth") or name == "__pycache__" or OWN.match(name):
                continue
            if not with_extras and EXTRA_ONLY.match(name):
                continue
            link = target / name
            if not link.exists():
                link.symlink_to(entry)
    return target


@dataclass(frozen=True)
class Env:
    """A fresh virtual environment with the wheel installed."""

    root: Path
    home: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed ``keyvault`` script with an isolated HOME and no inherited config."""
        return self._run([str(self.bin / "keyvault"), *args], env)

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run the venv's interpreter away from the checkout (``-c`` puts the cwd on sys.path)."""
        return self._run([str(self.bin / "python"), "-c", code], None)

    def _run(self, argv: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
        base = {
            "PATH": f"{self.bin}{os.pathsep}/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local/share"),
            "XDG_STATE_HOME": str(self.home / ".local/state"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
        }
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env={**base, **(env or {})},
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            check=False,
        )


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel .``, once per session (offline when hatchling is already installed)."""
    out = tmp_path_factory.mktemp("dist")
    try:
        import hatchling  # noqa: F401

        isolation = ["--no-build-isolation"]
    except ImportError:  # the build backend comes from the index, as for `pip install .`
        isolation = []
    built = _pip("wheel", "--no-deps", *isolation, "-w", str(out), str(REPO))
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(out.glob("keyvault-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def deps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("deps")
    return {
        "full": _dependency_dir(base / "full", with_extras=True),
        "core": _dependency_dir(base / "core", with_extras=False),
    }


@pytest.fixture(scope="session")
def make_env(
    tmp_path_factory: pytest.TempPathFactory, wheel: Path, deps: dict[str, Path]
) -> Callable[[str, str], tuple[Env, subprocess.CompletedProcess[str]]]:
    """Create a venv over ``full`` or ``core`` deps and ``pip install --no-index`` a spec."""

    def make(deps_name: str, extras: str) -> tuple[Env, subprocess.CompletedProcess[str]]:
        root = tmp_path_factory.mktemp(f"venv-{deps_name}-{extras or 'none'}")
        venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
        purelib = subprocess.run(
            [
                str(root / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(purelib) / "keyvault-test-deps.pth").write_text(f"{deps[deps_name]}\n")
        spec = f"keyvault{f'[{extras}]' if extras else ''} @ {wheel.as_uri()}"
        installed = _pip(
            "--python",
            str(root / "bin" / "python"),
            "install",
            "--no-index",
            "--no-cache-dir",
            spec,
        )
        home = root / "home"
        home.mkdir()
        return Env(root, home), installed

    return make


@pytest.fixture(scope="session")
def core_env(make_env: Callable[[str, str], tuple[Env, subprocess.CompletedProcess[str]]]) -> Env:
    env, installed = make_env("core", "")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return env


def test_the_wheel_holds_the_package_and_declares_the_extras(wheel: Path) -> None:
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta_name).decode()
        entry_points = zf.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert "keyvault/cli/app.py" in names and "keyvault/envelope.py" in names
    assert "keyvault/cli/schemas/backup.json" in names  # the --json schemas ship too
    assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/"))]
    assert "keyvault = keyvault.cli.app:main" in entry_points
    for extra in ("aws", "vault", "hsm", "all"):
        assert f"Provides-Extra: {extra}" in metadata
    assert re.search(r"Requires-Dist: boto3.*extra == .aws.", metadata)
    assert re.search(r"Requires-Dist: hvac.*extra == .vault.", metadata)
    assert re.search(r"Requires-Dist: python-pkcs11.*extra == .hsm.", metadata)


def test_installed_without_extras_runs(core_env: Env) -> None:
    version = core_env.run("--version")
    assert version.returncode == 0, version.stderr
    assert re.fullmatch(
        r"keyvault \d+\.\d+\.\d+\S*\nenvelope format: writes v\d+; .*\n", version.stdout
    )
    where = core_env.python("import keyvault; print(keyvault.__file__)").stdout
    assert where.startswith(str(core_env.root)), where  # the wheel, not the editable checkout
    helped = core_env.run("--help")
    assert helped.returncode == 0 and "Exit codes" in helped.stdout, helped.stderr
    doctor = core_env.run("doctor", "--json")
    report = json.loads(doctor.stdout)
    assert doctor.returncode in (0, 1), doctor.stderr  # 1: nothing configured yet is a failure
    checks = {f["check"] for f in report["findings"]}
    assert {"config", "store"} <= checks and any(c.startswith("wrapper") for c in checks)
    assert isinstance(report["healthy"], bool)


def test_a_missing_extra_names_the_extra_to_install(core_env: Env, tmp_path: Path) -> None:
    from keyvault.trust.sample import write_sample_trust_dir

    trust = tmp_path / "trust"
    write_sample_trust_dir(trust, {"root": "r-pass", "targets": "t-pass", "snapshot": "s-pass"})
    store = tmp_path / "store"
    config = ["--config", str(tmp_path / "config.toml")]
    made = core_env.run(*config, "--store", store.as_uri(), "--team", "ship", "init")
    assert made.returncode == 0, made.stderr
    run = core_env.run(
        *config,
        "--trust-dir",
        str(trust),
        "--wrapper",
        "awskms:///alias/keyvault-ship",
        "backup",
        "--all",
        env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
    )
    assert run.returncode == 6, run.stdout + run.stderr
    assert "boto3" in run.stderr and "pip install 'keyvault[aws]'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not [p for p in store.rglob("*") if p.is_file() and "/v1/" in p.as_posix()]


def test_an_extra_cannot_be_installed_without_its_sdk(
    make_env: Callable[[str, str], tuple[Env, subprocess.CompletedProcess[str]]],
) -> None:
    """The extras really carry the SDKs: over ``core`` deps, pip cannot satisfy ``[aws]``."""
    _, installed = make_env("core", "aws")
    assert installed.returncode != 0
    assert "boto3" in installed.stdout + installed.stderr


@pytest.mark.parametrize(
    ("extras", "module"),
    [("aws", "boto3"), ("vault", "hvac"), ("hsm", "pkcs11"), ("all", "boto3,hvac,pkcs11")],
)
def test_installed_with_extras(
    make_env: Callable[[str, str], tuple[Env, subprocess.CompletedProcess[str]]],
    extras: str,
    module: str,
) -> None:
    env, installed = make_env("full", extras)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert env.run("--version").returncode == 0
    imported = env.python(f"import {module}")
    assert imported.returncode == 0, imported.stderr


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F"),
        ("zsh", "#compdef keyvault"),
        ("fish", "complete --command keyvault"),
    ],
)
def test_shell_completion_script(core_env: Env, shell: str, marker: str) -> None:
    """``keyvault --show-completion SHELL`` prints the script ``--install-completion`` installs.

    typer asks shellingham which shell runs it unless ``_TYPER_COMPLETE_TEST_DISABLE_SHELL_
    DETECTION`` is set; with it, the shell named on the command line is used.
    """
    run = core_env.run(
        "--show-completion", shell, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    )
    assert run.returncode == 0, run.stderr
    assert marker in run.stdout, run.stdout
    assert "_KEYVAULT_COMPLETE" in run.stdout
