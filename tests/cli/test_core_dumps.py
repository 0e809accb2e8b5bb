"""T7: a keyvault process leaves no core dump: RLIMIT_CORE 0 and not dumpable, from start-up.

The real CLI runs as a child process (``python -m keyvault restore``) and is
stopped where it waits for the wrapper passphrase on a terminal, with the
envelopes read. The test then looks at it from outside: its core limit in
``/proc/<pid>/limits``, and what a SIGABRT leaves in its working directory
(where this machine's ``core_pattern`` puts ``core``: a control process
shows it does). The child starts with core files allowed, as a developer's
shell or a service manager may allow them: keyvault must switch them off
itself.

Whether a process is dumpable shows from outside in who owns its ``/proc/<pid>``
entries: the process's own uid and gid while it is, root once it is not. Run
in group 65534 (still uid 0, so it reads the root-owned test files), keyvault's
``/proc/<pid>/status`` must belong to group 0. The deploy units'
``LimitCORE=0`` is checked in tests/daemon/test_deploy.py.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.host import is_root

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir

pytestmark = pytest.mark.proves("T7")

PASS = "correct horse"
PASSPHRASE = "core-dump passphrase 7d1e"
PROMPT = b"Passphrase for passphrase:"
NEEDS_ROOT = "needs root to run keyvault in another group (gid 65534)"
NOGROUP = 65534
UNLIMITED = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)


def _allow_cores() -> None:
    """In the child before exec: core files allowed, as high as this user may go."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, UNLIMITED)
    except (ValueError, OSError):  # not root: up to the hard limit
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def core_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("core"))


def core_limit(pid: int) -> tuple[str, str]:
    """(soft, hard) of "Max core file size" in /proc/<pid>/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError("no core limit in /proc/<pid>/limits")


@pytest.fixture
def backed_up(kv: KV, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keys backed up under a passphrase wrapper; the passphrase is then forgotten."""
    write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), PASS)
    )
    monkeypatch.setenv("KEYVAULT_PASSPHRASE", PASSPHRASE)
    assert kv("--store", (home / "store").as_uri(), "--wrapper", "passphrase:", "init").code == 0
    run = kv("backup")
    assert run.code == 0, run.err
    monkeypatch.delenv("KEYVAULT_PASSPHRASE")
    return home


class WaitingRestore:
    """``keyvault restore`` on a terminal, stopped at the passphrase prompt."""

    def __init__(self, home: Path, cwd: Path, group: int | None = None) -> None:
        self.cwd = cwd
        master, slave = os.openpty()
        self._master = master
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyvault",
                "--trust-dir",
                str(home / "restored"),
                "restore",
                "--all",
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=dict(os.environ),
            start_new_session=True,
            preexec_fn=_allow_cores,
            group=group,
            extra_groups=None if group is None else [],
        )
        os.close(slave)
        self.output = self._read_until(PROMPT)

    def _read_until(self, marker: bytes) -> bytes:
        seen = b""
        while marker not in seen:
            ready, _, _ = select.select([self._master], [], [], 120)
            chunk = os.read(self._master, 4096) if ready else b""
            assert chunk, f"keyvault stopped before prompting: {seen.decode(errors='replace')}"
            seen += chunk
        return seen

    def abort(self) -> int:
        """SIGABRT, as a crash would end it; the wait status."""
        self.proc.send_signal(signal.SIGABRT)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self._master)


def status_group(pid: int) -> int:
    """The group that owns /proc/<pid>/status: the process's own while it is dumpable."""
    return os.stat(f"/proc/{pid}/status").st_gid


@pytest.fixture
def restore(backed_up: Path, tmp_path: Path) -> Iterator[WaitingRestore]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    waiting = WaitingRestore(backed_up, cwd)
    try:
        yield waiting
    finally:
        waiting.close()
        shutil.rmtree(cwd, ignore_errors=True)  # a core file, if the test failed


def test_a_restore_waiting_for_a_secret_has_no_core_limit_and_aborts_without_a_core(
    restore: WaitingRestore, tmp_path: Path
) -> None:
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    control = subprocess.run(
        [sys.executable, "-c", "import os; os.abort()"],
        cwd=control_dir,
        preexec_fn=_allow_cores,
        check=False,
    )
    assert control.returncode == -signal.SIGABRT
    cores_here = core_files(control_dir) == ["core"]  # else core_pattern sends them elsewhere
    shutil.rmtree(control_dir)
    assert core_limit(restore.proc.pid) == ("0", "0")
    assert restore.abort() == -signal.SIGABRT
    assert core_files(restore.cwd) == [] or not cores_here
    assert PASSPHRASE.encode() not in restore.output


def test_a_restore_is_not_dumpable(backed_up: Path, tmp_path: Path) -> None:
    """PR_SET_DUMPABLE 0: no core whatever the limit or a core_pattern helper says, and no
    reading of its memory by other processes of the same user."""
    if not is_root():
        pytest.skip(NEEDS_ROOT)
    control = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        group=NOGROUP,
        extra_groups=[],
    )
    try:
        assert control.stdout is not None and control.stdout.readline() == b"ready\n"
        assert status_group(control.pid) == NOGROUP  # a dumpable process owns its /proc
    finally:
        control.communicate(b"")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    waiting = WaitingRestore(backed_up, cwd, group=NOGROUP)
    try:
        assert status_group(waiting.proc.pid) == 0
        assert waiting.abort() == -signal.SIGABRT
        assert core_files(cwd) == []
    finally:
        waiting.close()


def test_the_command_exec_runs_cannot_dump_core_either(backed_up: Path, tmp_path: Path) -> None:
    """The command holds the same keys: it inherits the hard limit 0 and cannot raise it."""
    out = tmp_path / "limits.json"
    probe = (
        "import json, resource, sys; before = resource.getrlimit(resource.RLIMIT_CORE)\n"
        "try:\n    resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))\n"
        "except (ValueError, OSError):\n    pass\n"
        "json.dump([before, resource.getrlimit(resource.RLIMIT_CORE)], "
        "open(sys.argv[1], 'w'))"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyvault",
            "exec",
            "--gun",
            "example.com/sample/app",
            "--",
            sys.executable,
            "-c",
            probe,
            str(out),
        ],
        env={**os.environ, "KEYVAULT_PASSPHRASE": PASSPHRASE, "KEYVAULT_TMPDIR": str(tmp_path)},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_allow_cores,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text()) == [[0, 0], [0, 0]]
