"""A signal to a *running* restore or backup subprocess: exit 130/143, nothing changed (#21).

The command is paused on a real event, not a sleep: its Transit request hangs
in an AnswerProxy in front of OpenBao, and the signal is sent once that request
has arrived (``proxy.seen``), so the command is in the middle of its work. The
target trust directory (restore) and the store (backup) must be as they were.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.answer_proxy import AnswerProxy
from fixtures.host import tree
from fixtures.vault import ROOT_TOKEN, TRANSIT_MOUNT, BaoServer

from cli.conftest import KV
from keyvault.plugins import BackendOptions
from keyvault.stores.file import FileStore
from keyvault.trust.sample import write_sample_trust_dir

#: Each signal, its exit code and what keyvault says (README's exit codes, troubleshooting).
SIGNALS = [
    (signal.SIGINT, 130, "keyvault: interrupted; nothing was left half-written"),
    (signal.SIGTERM, 143, "keyvault: terminated; nothing was left half-written"),
]
GUNS = ("example.com/team-a/app", "example.com/team-a/web")


@pytest.fixture
def transit_key(bao: BaoServer, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), "p"), GUNS
    )
    FileStore.from_uri((home / "store").as_uri(), BackendOptions(), create=True).close()
    return bao.transit_key(team="team-a")


def config(home: Path, key: str, address: str) -> Path:
    path = home / f"kv-{address.rsplit(':', 1)[1]}.toml"
    path.write_text(
        "\n".join(
            [
                "[keyvault]",
                'team = "team-a"',
                f"store = {json.dumps((home / 'store').as_uri())}",
                f'wrappers = ["transit://{TRANSIT_MOUNT}/{key}"]',
                "",
                "[vault]",
                f'address = "{address}"',
                "timeout = 2",
                "",
            ]
        )
    )
    return path


def interrupted(
    argv: list[str], proxy: AnswerProxy, signum: int
) -> subprocess.CompletedProcess[str]:
    """Run ``keyvault ARGV``, send ``signum`` once its request hangs in ``proxy``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyvault", *argv],
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        arrived = proxy.seen.wait(120)  # a safety net for a broken run, not a timing
        if arrived:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert arrived, err
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def is_transit(operation: str) -> Callable[[bytes], bool]:
    return lambda request: f"/{TRANSIT_MOUNT}/{operation}/".encode() in request.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(("signum", "code", "said"), SIGNALS)
def test_a_signal_to_a_running_restore_leaves_the_trust_dir_as_it_was(
    kv: KV,
    home: Path,
    bao: BaoServer,
    transit_key: str,
    tmp_path: Path,
    signum: int,
    code: int,
    said: str,
) -> None:
    assert kv("--config", config(home, transit_key, bao.address), "backup").code == 0
    target = tmp_path / "laptop" / "trust"
    (target / "private").mkdir(parents=True, mode=0o700)
    (target / "private" / "keep.txt").write_text("already here\n")
    before = tree(target)
    proxy = AnswerProxy(bao.port, is_transit("decrypt"), "hang")
    run = interrupted(
        [
            "--config",
            str(config(home, transit_key, proxy.endpoint)),
            "--trust-dir",
            str(target),
            "restore",
            "--all",
        ],
        proxy,
        signum,
    )
    assert run.returncode == code, run.stderr
    assert said in run.stderr.splitlines()  # Ctrl-C too: typer's own exit 130 said nothing
    assert tree(target) == before


@pytest.mark.parametrize(("signum", "code", "said"), SIGNALS)
def test_a_signal_to_a_running_backup_leaves_the_store_as_it_was(
    home: Path, bao: BaoServer, transit_key: str, signum: int, code: int, said: str
) -> None:
    store, trust = home / "store", home / ".docker" / "trust"
    before, keys = tree(store), tree(trust)
    proxy = AnswerProxy(bao.port, is_transit("encrypt"), "hang")
    run = interrupted(
        ["--config", str(config(home, transit_key, proxy.endpoint)), "backup"], proxy, signum
    )
    assert run.returncode == code, run.stderr
    assert said in run.stderr.splitlines()
    assert tree(store) == before
    assert tree(trust) == keys
