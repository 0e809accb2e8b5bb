"""`keyvault list` is paged and streamed: it prints while the store is still listing, and
holds no listing whole (issue #20, 100,000 keys). No timing: a proxy in front of a real
SeaweedFS holds the store's second page until the first key has been printed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from fixtures.proxy import PausingProxy
from fixtures.s3 import ADMIN, WeedServer, new_bucket, s3_settings
from schemacheck import validate

from keyvault.cli import output
from keyvault.config import Config, load_config
from keyvault.names import KeyAddress
from keyvault.ops.listing import iter_listed
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.stores import Store, open_store
from keyvault.wrappers.age import generate_identity

TEAM = "team-a"
#: One more than a page of S3's ListObjectsV2 (and than stream_table's first rows).
KEYS = 1001
ROOT = Path(__file__).resolve().parents[2]


def _address(i: int) -> KeyAddress:
    return KeyAddress(
        TEAM,
        f"example.com/team-a/app{i // 2:04d}",
        ("targets", "snapshot")[i % 2],
        hashlib.sha256(b"%d" % i).hexdigest(),
    )


@pytest.fixture(scope="module")
def names_bucket(weed: WeedServer) -> str:
    """KEYS names of one team in a real bucket (``list`` reads no object, so the bodies
    are placeholders), written once for the module."""
    admin, bucket = weed.admin(), new_bucket(weed)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: admin.put_object(
                    Bucket=bucket, Key=f"keyvault/{_address(i).object_name}", Body=b"{}"
                ),
                range(KEYS),
            )
        )
    return bucket


@pytest.fixture
def paged_store(
    weed: WeedServer, names_bucket: str, home: Path
) -> Iterator[tuple[Path, PausingProxy]]:
    """A config that reaches the names through a PausingProxy."""
    proxy = PausingProxy(int(weed.endpoint.rsplit(":", 1)[1]))
    config = home / "kv.toml"
    config.write_text(
        "\n".join(
            [
                "[keyvault]",
                f'team = "{TEAM}"',
                f'store = "s3://{names_bucket}/keyvault"',
                "[s3]",
                *(
                    f"{k} = {json.dumps(v)}"
                    for k, v in s3_settings(
                        weed, endpoint_url=proxy.url, read_timeout=300, max_attempts=1
                    ).items()
                ),
            ]
        )
        + "\n"
    )
    yield config, proxy
    proxy.close()


def _run_list(config: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "keyvault", "--config", str(config), *args, "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )


class Reader:
    """Reads a process's stdout to the end (so it never blocks on a full pipe), and notes
    when the first line with ``marker`` has come."""

    def __init__(self, proc: subprocess.Popen[str], marker: str) -> None:
        self.lines: list[str] = []
        self.found = threading.Event()
        self.marker = marker
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            if self.marker in line:
                self.found.set()


@pytest.mark.parametrize("json_out", [True, False], ids=["json", "table"])
def test_list_prints_the_first_key_while_the_store_is_still_listing(
    paged_store: tuple[Path, PausingProxy], json_out: bool
) -> None:
    config, proxy = paged_store
    env = {"AWS_ACCESS_KEY_ID": ADMIN[0], "AWS_SECRET_ACCESS_KEY": ADMIN[1]}
    proc = _run_list(config, env, *(["--json"] if json_out else []))
    reader = Reader(proc, '"key_id":' if json_out else "example.com/")
    try:
        # The first key is printed while the store's second page is held back. The waits
        # are deadlock guards (a listing that does not stream would wait here for ever).
        assert proxy.held.wait(120), proxy.requests  # the listing asks for a second page
        assert reader.found.wait(120), "nothing printed before the second page came"
        assert not proxy.released.is_set() and proc.poll() is None
    finally:
        proxy.release()
        proc.wait(300)
        reader.thread.join(60)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    text = "".join(reader.lines)
    if json_out:
        doc = json.loads(text)  # the streamed document is whole and valid
        validate(doc, "list")
        assert len(doc["keys"]) == KEYS
        assert {k["object"] for k in doc["keys"]} == {_address(i).object_name for i in range(KEYS)}
    else:
        lines = text.splitlines()
        assert lines[1].split() == ["ROLE", "GUN", "KEY", "ID"]
        assert len(lines) == 2 + KEYS
        assert {line.split()[-1] for line in lines[2:]} == {_address(i).key_id for i in range(KEYS)}


# -- structure: nothing holds the whole listing ------------------------------------------


class CountingStore:
    """A real store whose ``list`` counts the names it has handed out so far."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.handed_out = 0

    def list(self, prefix: str, *, after: str = "") -> Iterator[str]:
        for name in self.inner.list(prefix, after=after):
            self.handed_out += 1
            yield name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _file_machine(tmp_path: Path) -> tuple[Config, Store]:
    env = {
        "HOME": str(tmp_path),
        "KEYVAULT_TEAM": TEAM,
        "KEYVAULT_WRAPPERS": generate_identity(tmp_path / "id.txt"),
        "KEYVAULT_STORE": f"file://{tmp_path / 'store'}",
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    config = load_config(None, env)
    return config, open_store(config.require_store(), config.backend_options(None), create=True)


@pytest.mark.parametrize(
    "selection",
    [Selection(), Selection(guns=("example.com/team-a/*",)), Selection(roles=("targets",))],
    ids=["everything", "gun-pattern", "role"],
)
def test_a_listing_is_an_iterator_that_reads_the_store_as_it_goes(
    tmp_path: Path, selection: Selection
) -> None:
    config, store = _file_machine(tmp_path)
    for i in range(300):
        store.write(_address(i).object_name, b"{}")
    with Session(config) as session:
        counting = CountingStore(store)
        session._store = cast(Store, counting)
        items = iter_listed(session, team=TEAM, selection=selection)
        assert not isinstance(items, list | tuple)
        first = next(items)
        assert isinstance(first.address, KeyAddress)
        assert counting.handed_out < 10  # the first item came before the rest was listed
        assert 150 <= len(list(items)) + 1 <= 300
        assert counting.handed_out == 300


def test_a_selector_that_matches_nothing_fails_before_anything_is_listed(tmp_path: Path) -> None:
    """Items are held back until every --gun has matched, so the error comes first."""
    config, store = _file_machine(tmp_path)
    for i in range(10):
        store.write(_address(i).object_name, b"{}")
    from keyvault.errors import NotFoundError

    with Session(config) as session:
        items = iter_listed(
            session,
            team=TEAM,
            selection=Selection(
                guns=("example.com/team-a/app0001", "example.com/team-a/nothing-here")
            ),
        )
        with pytest.raises(NotFoundError, match="nothing-here"):
            next(items)


# -- the streamed JSON is exactly what emit_json writes -----------------------------------


@pytest.mark.parametrize("count", [0, 1, 3])
def test_streamed_json_is_the_document_emit_json_writes(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [
        {"key_id": f"{i:064x}", "nested": {"a": [1, 2]}, "s3": "s3://u:secret@b/p"}
        for i in range(count)
    ]
    doc = {"store": "s3://user:pass@bucket/x", "team": TEAM}
    whole, streamed = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", whole)
    output.emit_json({**doc, "keys": items})
    monkeypatch.setattr(sys, "stdout", streamed)
    output.emit_json_stream(doc, "keys", iter(items))
    assert streamed.getvalue() == whole.getvalue()
    assert "secret" not in streamed.getvalue() and "pass@" not in streamed.getvalue()
    assert json.loads(streamed.getvalue())["keys"] == json.loads(whole.getvalue())["keys"]
