"""The deploy units: the systemd user unit passes systemd-analyze, the launchd plist parses."""

from __future__ import annotations

import os
import plistlib
import subprocess
from pathlib import Path

import pytest
from fixtures.components import find_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "keyvault-daemon.service"
DRILL_UNIT = DEPLOY / "systemd" / "keyvault-drill.service"
PLIST = DEPLOY / "launchd" / "com.keyvault.daemon.plist"


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_systemd_unit_runs_the_daemon_hardened() -> None:
    d = _directives(UNIT.read_text())
    assert d["ExecStart"][0].split()[1:3] == ["daemon", "--listen"]
    assert d["Restart"] == ["on-failure"] and "7" in d["RestartPreventExitStatus"][0].split()
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "UMask": "0077",
        "MemoryDenyWriteExecute": "yes",
        "StateDirectory": "keyvault",
        "StateDirectoryMode": "0700",
    }.items():
        assert d[key] == [value], key
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "@system-service" in d["SystemCallFilter"]
    assert d["WantedBy"] == ["default.target"]


@pytest.mark.parametrize("source", [UNIT, DRILL_UNIT], ids=lambda p: p.name)
def test_systemd_unit_verifies(tmp_path: Path, source: Path) -> None:
    analyze, keyvault = find_tool("systemd-analyze"), find_tool("keyvault")
    unit = tmp_path / source.name
    # verify checks that ExecStart's program exists: point it at the installed one.
    unit.write_text(source.read_text().replace("%h/.local/bin/keyvault", keyvault))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        [analyze, "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if unit.name in line or "Unknown" in line or "ignoring" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_systemd_analyze_would_catch_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: an unknown directive is reported."""
    analyze = find_tool("systemd-analyze")
    unit = tmp_path / "bad.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nProtectHomes=yes\n")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [analyze, "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
        check=False,
    )
    assert "ProtectHomes" in result.stdout + result.stderr


def test_launchd_plist_parses_and_runs_the_daemon() -> None:
    with PLIST.open("rb") as fh:
        doc = plistlib.load(fh)
    assert doc["Label"] == "com.keyvault.daemon"
    assert doc["ProgramArguments"][1:3] == ["daemon", "--listen"]
    assert doc["ProgramArguments"][3].startswith("127.0.0.1:")
    assert doc["RunAtLoad"] is True and doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["Umask"] == 0o077


@pytest.mark.proves("T7")
def test_every_unit_switches_core_dumps_off() -> None:
    """T7: the service manager says it too (keyvault sets RLIMIT_CORE 0 itself at start-up):
    from the first instruction, and where an operator looks."""
    for unit in (UNIT, DRILL_UNIT):
        assert _directives(unit.read_text())["LimitCORE"] == ["0"], unit.name
    with PLIST.open("rb") as fh:
        doc = plistlib.load(fh)
    assert doc["SoftResourceLimits"] == {"Core": 0} and doc["HardResourceLimits"] == {"Core": 0}
