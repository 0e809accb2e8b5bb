"""F11: a server that accepts a connection and never answers ends a run, by a timeout the
user sets per backend, with exit 6 naming the endpoint; nothing is written.

No timing is asserted: the test shows that the run ends, that the configured
timeout is the one that ended it (it is named, or the SDK's read timeout is),
and that nothing changed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.host import Unchanged

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/team-a/app"


@pytest.fixture
def silent() -> Iterator[str]:
    """An endpoint on 127.0.0.1 that accepts every connection and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


CASES = {
    # name: (extra global options, config sections, what the error says)
    "s3 store": (
        ["--store", "s3://keys"],
        '[s3]\nendpoint_url = "{url}"\nregion = "us-east-1"\nconnect_timeout = 1\n'
        "read_timeout = 1\nmax_attempts = 1\n",
        "ReadTimeoutError",
    ),
    "vault store": (
        ["--store", "vault://secret/keys"],
        '[vault]\naddress = "{url}"\ntimeout = 1\n',
        "no answer within 1 s",
    ),
    "kms wrapper": (
        ["--wrapper", "awskms:///alias/keys"],
        '[awskms]\nendpoint_url = "{url}"\nregion = "us-east-1"\n'
        "connect_timeout = 1\nread_timeout = 1\nmax_attempts = 1\n",
        "ReadTimeoutError",
    ),
}


@pytest.mark.proves("F11")
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_server_that_never_answers_ends_the_run_by_the_configured_timeout(
    kv: KV, home: Path, silent: str, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    options, section, says = CASES[case]
    for var, value in (
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "x" * 40),
        ("VAULT_TOKEN", "hvs.example"),
    ):
        monkeypatch.setenv(var, value)
    trust = home / ".docker" / "trust"
    write_sample_trust_dir(trust, dict.fromkeys(("root", "targets", "snapshot"), "pw"), (GUN,))
    config = Path(kv("--json", "init").json()["config_file"])
    with config.open("a") as f:
        f.write("\n" + section.format(url=silent))
    store = home / ".local" / "share" / "keyvault" / "store"
    guard = Unchanged(trust, store)
    run = kv(*options, "backup")
    assert run.code == 6, run.out + run.err
    host = silent.removeprefix("http://")
    assert host in run.err and says in run.err, run.err
    assert "hvs.example" not in run.err and "x" * 40 not in run.err
    guard.check()
