"""Build keyvault's sdist and wheel, install the wheel in a clean virtualenv, run quickstart.

The release checklist's build-and-try step (docs/releasing.md), run by
tests/ship/test_release.py too. It needs no network: the build runs without
isolation when hatchling is installed, and the clean virtualenv (no pip, no
system site-packages, never this checkout) gets the wheel's dependencies from a
wheelhouse repacked from the distributions installed beside this Python: the
versions the test suite ran with.

    .venv/bin/python scripts/release_check.py [--out DIR]

Exit 0 when every check passed; otherwise 1 and the check that failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


class CheckFailedError(Exception):
    """One release check did not hold; the message says which and what was seen."""


def source_version() -> str:
    """``__version__`` in keyvault/__init__.py: the one place the version is written."""
    text = (REPO / "keyvault" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if found is None:
        raise CheckFailedError("keyvault/__init__.py has no __version__ line")
    return found.group(1)


def build(out: Path) -> tuple[Path, Path]:
    """``python -m build``: the sdist, then the wheel built from the sdist."""
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    run = subprocess.run(
        [sys.executable, "-m", "build", *isolation, "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if run.returncode != 0:
        raise CheckFailedError(f"python -m build failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    sdists, wheels = list(out.glob("keyvault-*.tar.gz")), list(out.glob("keyvault-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailedError(
            f"expected one sdist and one wheel in {out}, found {[p.name for p in out.iterdir()]}"
        )
    return sdists[0], wheels[0]


def check_dists(sdist: Path, wheel: Path, version: str) -> None:
    """Both carry the version and the exact LICENSE of the repository."""
    license_text = (REPO / "LICENSE").read_bytes()
    if not sdist.name == f"keyvault-{version}.tar.gz":
        raise CheckFailedError(f"sdist {sdist.name} does not carry version {version}")
    if not wheel.name.startswith(f"keyvault-{version}-"):
        raise CheckFailedError(f"wheel {wheel.name} does not carry version {version}")
    with tarfile.open(sdist) as tf:
        member = tf.extractfile(f"keyvault-{version}/LICENSE")
        if member is None or member.read() != license_text:
            raise CheckFailedError(f"{sdist.name}: LICENSE missing or not the repository's")
    with zipfile.ZipFile(wheel) as zf:
        name = f"keyvault-{version}.dist-info/licenses/LICENSE"
        if name not in zf.namelist() or zf.read(name) != license_text:
            raise CheckFailedError(f"{wheel.name}: {name} missing or not the repository's")


def check_changelog(version: str) -> None:
    """CHANGELOG.md has a dated section for the version being released."""
    text = (REPO / "CHANGELOG.md").read_text()
    if not re.search(
        rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.MULTILINE
    ):
        raise CheckFailedError(f"CHANGELOG.md has no '## [{version}] - YYYY-MM-DD' section")


def _requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    return [
        Requirement(line.split(":", 1)[1].strip())
        for line in lines
        if line.startswith("Requires-Dist:")
    ]


def _needed(requirements: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions the requirements (no extras) pull in, transitively."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(r, frozenset[str]()) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            continue
        key = canonicalize_name(req.name)
        if key in found:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise CheckFailedError(
                f"{req.name} (needed by the wheel) is not installed beside {sys.executable}"
            ) from None
        found[key] = dist
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return found


def _wheel_tag(dist: importlib.metadata.Distribution) -> str:
    """The tag the distribution was installed from (its WHEEL file), compressed."""
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    if not tags:
        raise CheckFailedError(f"{dist.metadata['Name']} was not installed from a wheel")
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    return "-".join(".".join(p) for p in parts)


def wheelhouse(wheel: Path, out: Path) -> Path:
    """A wheel per dependency, repacked from its installed files (no index, no download)."""
    out.mkdir()
    for dist in _needed(_requirements(wheel)).values():
        site = Path(str(dist.locate_file("")))
        name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
        with zipfile.ZipFile(
            out / f"{name}-{dist.version}-{_wheel_tag(dist)}.whl", "w", zipfile.ZIP_DEFLATED
        ) as zf:
            for file in dist.files or []:
                # Scripts (../../bin) are made again from entry_points.txt on install.
                if file.parts[0] == ".." or "__pycache__" in file.parts:
                    continue
                if (site / file).is_file():
                    zf.write(site / file, file.as_posix())
    return out


def clean_venv(root: Path, wheel: Path, house: Path) -> Path:
    """A virtualenv with nothing but the wheel and its dependencies; its ``bin``."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(root)
    python = root / "bin" / "python"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-index",
            "--no-cache-dir",
            "--find-links",
            str(house),
            "--disable-pip-version-check",
            "--quiet",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if run.returncode != 0:
        raise CheckFailedError(f"installing {wheel.name} offline failed:\n{run.stderr[-3000:]}")
    return root / "bin"


def run_installed(bin_dir: Path, home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A program of the virtualenv in a fresh HOME, with nothing of this shell's environment
    (no PYTHONPATH, no KEYVAULT_* settings, no config)."""
    home.mkdir(mode=0o700, exist_ok=True)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
    }
    return subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def check_installed(bin_dir: Path, home: Path, version: str) -> None:
    """``keyvault --version`` names the version; ``keyvault quickstart`` succeeds."""
    where = run_installed(
        bin_dir, home, "python", "-c", "import keyvault; print(keyvault.__file__)"
    )
    if not where.stdout.startswith(str(bin_dir.parent)):
        raise CheckFailedError(f"the clean virtualenv imports keyvault from {where.stdout.strip()}")
    shown = run_installed(bin_dir, home, "keyvault", "--version")
    if shown.returncode != 0 or not shown.stdout.startswith(f"keyvault {version}\n"):
        raise CheckFailedError(f"keyvault --version printed {shown.stdout!r} {shown.stderr!r}")
    quick = run_installed(bin_dir, home, "keyvault", "quickstart")
    if quick.returncode != 0:
        raise CheckFailedError(
            f"keyvault quickstart exited {quick.returncode}:\n"
            f"{quick.stdout[-2000:]}{quick.stderr[-2000:]}"
        )


def release_check(out: Path) -> tuple[Path, Path]:
    """Every check in order; the sdist and the wheel, left in ``out/dist``."""
    version = source_version()
    check_changelog(version)
    sdist, wheel = build(out / "dist")
    check_dists(sdist, wheel, version)
    bin_dir = clean_venv(out / "venv", wheel, wheelhouse(wheel, out / "wheelhouse"))
    check_installed(bin_dir, out / "home", version)
    return sdist, wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build, install in a clean virtualenv, run quickstart: the release check."
    )
    parser.add_argument("--out", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="keyvault-release-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        sdist, wheel = release_check(out)
    except CheckFailedError as exc:
        print(f"release check failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"ok: {sdist.name} and {wheel.name} (in {sdist.parent}) ship LICENSE; the wheel "
        f"installed offline in a clean virtualenv ({out / 'venv'}) runs quickstart"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
