"""``drill`` and ``quickstart`` restore every key, root included: only into RAM, marked, zeroed.

Issue 17 item 8: they used a disk-backed ``tempfile.mkdtemp`` removed with
``rmtree`` only, so a SIGKILL left root key bytes on disk. A real keyvault
process is stopped right after its restore (a wrapper around the restore
step, installed by the test before ``main`` runs), killed, and its
directory is then looked for: on tmpfs, marked, swept by ``wipe --stale``
with the file contents zeroed first. A normal run leaves nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import keyvault
from cli.conftest import KV
from keyvault.ops import drill, quickstart
from keyvault.scratch import MARKER_NAME, WorkDir, read_marker, wipe_tree
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/scratch/app"
PASS = "scratch pass"
ROLES = ("root", "targets", "snapshot")
#: Per command: its argv, and the module attribute that performs its restore.
COMMANDS = {
    "drill": (("drill", "--all", "--no-metadata"), drill, "apply_restore"),
    "quickstart": (("quickstart",), quickstart, "restore_keys"),
}
#: Runs keyvault's CLI after wrapping one restore step: once it has returned, the
#: process writes the trust directory's path to argv[1] and stops itself (SIGSTOP).
PAUSED_RUN = """
import os, signal, sys
import keyvault.ops.{module} as target
from keyvault.cli.app import main

original = target.{name}

def paused(*args, **kwargs):
    result = original(*args, **kwargs)
    trust = kwargs.get("trust_dir", args[0])
    with open(sys.argv[1], "w") as note:
        note.write(str(trust))
    os.kill(os.getpid(), signal.SIGSTOP)
    return result

target.{name} = paused
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def keys(kv: KV, home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[KeyFile, ...]:
    """A backed-up trust directory; neither KEYVAULT_TMPDIR nor XDG_RUNTIME_DIR set."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    made = write_sample_trust_dir(home / ".docker" / "trust", dict.fromkeys(ROLES, PASS), (GUN,))
    for role in ROLES:
        monkeypatch.setenv(f"NOTARY_{role.upper()}_PASSPHRASE", PASS)
    assert kv("init").code == 0
    assert kv("backup").code == 0
    return made


def root_of(keys: tuple[KeyFile, ...]) -> KeyFile:
    return next(k for k in keys if k.role == "root")


def file_system_of(path: Path) -> str:
    """The type of the file system ``path`` is on (the longest mount point above it)."""
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        mount = mount.replace("\\040", " ")
        if Path(path).resolve().is_relative_to(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def key_bytes_under(root: Path, keys: tuple[KeyFile, ...], skip: Path) -> list[str]:
    """Files under ``root`` (``skip`` aside: the user's own trust directory) holding a key."""
    found = []
    for dirpath, _, names in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [f"{path}: {k.role}" for k in keys if k.data in data]
    return found


def start_paused(command: str, note: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A real keyvault process, stopped right after it restored the keys; TMPDIR on disk."""
    argv, module, name = COMMANDS[command]
    disk_tmp = tmp_path / "disk-tmp"
    disk_tmp.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(disk_tmp),
        "PYTHONPATH": str(Path(keyvault.__file__).parents[1]),
    }
    script = PAUSED_RUN.format(module=module.__name__.rsplit(".", 1)[1], name=name)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(note), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        pytest.fail(f"keyvault {command} ended before its restore: {status}: {err}")
    return proc


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.proves("T7")
def test_a_killed_run_leaves_no_key_on_disk_and_wipe_stale_zeroes_it(
    command: str, kv: KV, home: Path, keys: tuple[KeyFile, ...], tmp_path: Path
) -> None:
    root = root_of(keys)
    note = tmp_path / "trust-dir.txt"
    proc = start_paused(command, note, tmp_path)
    trust = Path(note.read_text())
    held = -1
    try:
        restored = trust / "private" / root.relpath
        assert restored.read_bytes() == root.data  # mid-run: the root key is there
        held = os.open(restored, os.O_RDONLY)  # a second view of the inode
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert restored.read_bytes() == root.data  # what the kill left behind...
        assert key_bytes_under(tmp_path, keys, skip=home / ".docker" / "trust") == []
        assert file_system_of(trust) == "tmpfs"  # ...is in RAM, never on disk
        assert read_marker(trust.parent).kind == command  # marked as this run's
        run = kv("--json", "wipe", "--stale")
        assert run.code == 0, run.err
        assert str(trust.parent) in run.json()["wiped"]
        assert not trust.parent.exists()
        assert os.pread(held, len(root.data), 0) == bytes(len(root.data))  # zeroed first
    finally:
        if held >= 0:
            os.close(held)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if trust.parent.exists() and trust.parent.name.startswith("keyvault-"):
            wipe_tree(trust.parent)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_normal_run_zeroes_and_removes_its_directory(
    command: str, kv: KV, keys: tuple[KeyFile, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "runtime"
    monkeypatch.setenv("KEYVAULT_TMPDIR", str(base))
    root = root_of(keys)
    argv, module, name = COMMANDS[command]
    original: Callable[..., Any] = getattr(module, name)
    seen: list[tuple[Path, int]] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        trust = Path(kwargs.get("trust_dir", args[0]))
        seen.append((trust, os.open(trust / "private" / root.relpath, os.O_RDONLY)))
        return result

    monkeypatch.setattr(module, name, watched)
    try:
        run = kv(*argv)
        assert run.code == 0, run.err
        assert seen, "the restore step did not run"
        for trust, held in seen:
            assert trust.parent.parent == base  # the runtime base, never tempfile's
            assert not trust.parent.exists()
            assert os.pread(held, len(root.data), 0) == bytes(len(root.data))
        assert list(base.iterdir()) == []
    finally:
        for _, held in seen:
            os.close(held)


@pytest.mark.parametrize("command", [*sorted(COMMANDS), "exec"])
def test_the_next_run_wipes_a_dead_runs_directory(
    command: str, kv: KV, keys: tuple[KeyFile, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill killed before: its directory goes at the start of the next drill,
    quickstart or exec, as an exec's did."""
    base = tmp_path / "runtime"
    base.mkdir()
    monkeypatch.setenv("KEYVAULT_TMPDIR", str(base))
    dead = WorkDir.create_in(base, "drill")
    forged = replace(dead.marker, pid=2**22 + 12345, pid_start=None)  # no such process
    (dead.path / MARKER_NAME).write_bytes(forged.to_bytes())
    (dead.trust_dir / "private").mkdir(parents=True)
    (dead.trust_dir / "private" / "leftover.key").write_bytes(root_of(keys).data)
    argv = COMMANDS[command][0] if command in COMMANDS else ("exec", "--gun", GUN, "--", "true")
    run = kv(*argv)
    assert run.code == 0, run.err
    assert not dead.path.exists()
