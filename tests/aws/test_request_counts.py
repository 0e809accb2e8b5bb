"""Requests per key of bulk backup and restore against S3 (SeaweedFS) + KMS (moto).

The bulk benchmark (benchmarks/bulk_s3_kms.py) reports these counts for 1,000
keys; this test pins them for a small run, so a change that adds a request per
key fails here rather than only slowing the benchmark. Requests are counted
by botocore ``before-call`` hooks (one per API call: a retry of the same call
is not counted, so a server's hiccup does not fail the test; ``before-send``
counts the attempts beside them) on the very clients keyvault's store and
wrapper hold.

Per key, what keyvault does today:

- first backup of many keys: one ``ListObjectsV2`` page per 1,000 keys (which keys
  already have an envelope?), then one KMS ``Encrypt`` and one ``PutObject``
  (``If-None-Match: *``, sent in one go: no ``Expect: 100-continue`` round trip);
- second backup of unchanged keys: the same ``ListObjectsV2`` page per 1,000 keys and
  nothing else: each listed ETag is the one this machine recorded when it sealed the
  key (keyvault.known; tests/aws/test_known_versions.py), no read, no KMS call, no write;
- a changed key: ``HeadObject`` (the ETag for ``If-Match``) + ``Encrypt`` +
  ``PutObject``, plus one ``GetBucketVersioning`` per session; no read, as its
  recorded version is the listed latest;
- restore: one ``ListObjectsV2`` page per 1,000 keys (which keys and trust pins there
  are) and, made at the same time, one ``ListObjectVersions`` page per 250 versions
  (AHEAD_PAGE: the versions beneath each latest, for its signed chain, read page by
  page; a key it leaves out, as SeaweedFS's may (tests/aws/test_s3_store.py), has its
  versions listed on its own),
  then ``GetObject`` + ``Decrypt`` per key; a restore of exact GUNs asks for each
  GUN's trust pin by name (one ``GetObject``).

Per command that wrote or restored keys, besides: one ``PutObject`` of the audit
log's signed checkpoint (``CHECKPOINT``), whatever the number of keys.
"""

from __future__ import annotations

import threading
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.servers import BackendSetup

from keyvault.config import Config, Paths
from keyvault.errors import AccessDeniedError, IntegrityError
from keyvault.highwater import HighWater
from keyvault.names import KeyAddress
from keyvault.ops.authentic import AHEAD_PAGE, AuthenticReader
from keyvault.ops.backup import CREATED, UNCHANGED, UPDATED, backup_keys
from keyvault.ops.restore import RestoreReport, restore_keys
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.stores.base import VersionPage
from keyvault.stores.s3 import S3Store
from keyvault.trust.keyid import private_key_id
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import notary_key_file
from keyvault.trust.scan import scan_trust_dir

N_KEYS = 20
TEAM = "counts"
KMS_OPS = frozenset({"Encrypt", "GenerateDataKey", "Decrypt", "ReEncrypt"})
#: The audit log's signed checkpoint: one small write per command (keyvault.ops.anchor).
CHECKPOINT = 1


class Requests:
    """API calls per operation name, counted by botocore hooks (thread-safe).

    ``before-call`` fires once per call, ``before-send`` once per HTTP attempt: the
    counts asserted are calls (first attempts), so a retry after a SeaweedFS or moto
    hiccup shows in ``retries`` and never changes them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._on_call)
        client.meta.events.register("before-send", self._on_send)

    def _on_call(self, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]  # before-call.<service>.<Operation>
        with self._lock:
            self.counts[operation] += 1

    def _on_send(self, event_name: str = "", **_: Any) -> None:
        with self._lock:
            self.attempts[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> Counter[str]:
        """The calls since the last take (the attempts beyond them are retries)."""
        with self._lock:
            counts, self.counts, self.attempts = self.counts, Counter(), Counter()
        return counts

    def retries(self) -> Counter[str]:
        with self._lock:
            return self.attempts - self.counts


def _make_trust_dir(path: Path, count: int) -> dict[str, ec.EllipticCurvePrivateKey]:
    """``count`` unencrypted notary key files; their private keys by file name."""
    private = path / "private"
    private.mkdir(parents=True, mode=0o700)
    made = {}
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        data = notary_key_file(
            key, ("targets", "snapshot")[i % 2], f"registry.example.com/counts/app-{i // 2}", ""
        )
        target = private / f"{private_key_id(key)}.key"
        target.write_bytes(data)
        target.chmod(0o600)
        made[target.name] = key
    return made


@pytest.fixture
def made_keys(tmp_path: Path) -> dict[str, ec.EllipticCurvePrivateKey]:
    return _make_trust_dir(tmp_path / "trust", N_KEYS)


@pytest.fixture
def trust_dir(made_keys: dict[str, ec.EllipticCurvePrivateKey], tmp_path: Path) -> Path:
    return tmp_path / "trust"


@pytest.fixture
def counted(s3_kms_backend: BackendSetup, tmp_path: Path) -> Iterator[tuple[Session, Requests]]:
    """A session on a fresh bucket and KMS key, its clients opened and hooked."""
    settings = tomllib.loads(s3_kms_backend.config_toml)
    state = tmp_path / "kv"
    config = Config(
        source=None,
        paths=Paths(state / "config", state / "data", state / "state"),
        team=TEAM,
        store=s3_kms_backend.store,
        wrappers=s3_kms_backend.wrappers,
        trust_dir=tmp_path / "trust",
        identity_files=(),
        settings=settings,
        concurrency=4,
        audit_to_store=False,
        env=dict(s3_kms_backend.env),
    )
    requests = Requests()
    with Session(config) as session:
        requests.attach(session.store()._client)  # type: ignore[attr-defined]
        for wrapper in session.wrappers():
            requests.attach(wrapper._client)  # type: ignore[attr-defined]
        yield session, requests


def _keys(trust_dir: Path) -> tuple[KeyFile, ...]:
    keys = scan_trust_dir(trust_dir).keys
    assert len(keys) == N_KEYS
    return keys


def test_first_backup_one_kms_call_and_one_write_per_key(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    session, requests = counted
    outcomes = backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [CREATED] * N_KEYS
    counts = requests.take()
    assert sum(counts[op] for op in KMS_OPS) == N_KEYS
    assert counts["Encrypt"] + counts["GenerateDataKey"] == N_KEYS
    assert counts["PutObject"] == N_KEYS + CHECKPOINT
    # A bulk backup lists the team's prefix once instead of reading each new key.
    assert counts["ListObjectsV2"] == 1 and counts["GetObject"] == 0
    assert set(counts) <= {"Encrypt", "GenerateDataKey", "PutObject", "ListObjectsV2"}


def test_a_retried_request_is_counted_once_and_its_retry_apart(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    """The counts above hold when the server hiccups: the first backup's first write
    gets a 503 (answered by a hook in place of the server) and is retried."""
    from botocore.awsrequest import AWSResponse

    session, requests = counted
    hiccups = [1]

    class _Body:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield b""

    def hiccup(**_: Any) -> AWSResponse | None:
        if hiccups and hiccups.pop():
            return AWSResponse("http://s3.invalid/", 503, {}, _Body())
        return None

    events = session.store()._client.meta.events  # type: ignore[attr-defined]
    events.register("before-send.s3.PutObject", hiccup)  # after Requests' own hook
    outcomes = backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [CREATED] * N_KEYS
    assert not hiccups and requests.retries() == Counter({"PutObject": 1})
    counts = requests.take()
    assert counts["PutObject"] == N_KEYS + CHECKPOINT
    assert counts["ListObjectsV2"] == 1 and counts["GetObject"] == 0


def test_second_backup_of_unchanged_keys_makes_no_kms_call_and_no_write(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    session, requests = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    requests.take()
    outcomes = backup_keys(session, keys, team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    counts = requests.take()
    assert counts == Counter({"ListObjectsV2": 1})


def test_changed_key_costs_one_kms_call_and_one_conditional_write(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    made_keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    session, requests = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    changed = keys[0]
    # `notary key passwd`: the same key under a passphrase, so new bytes, same key ID.
    (trust_dir / "private" / changed.relpath).write_bytes(
        notary_key_file(made_keys[changed.relpath], changed.role, changed.gun, "new passphrase")
    )
    requests.take()
    outcomes = backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    assert Counter(o.action for o in outcomes) == Counter({UNCHANGED: N_KEYS - 1, UPDATED: 1})
    counts = requests.take()
    assert counts == Counter(
        {
            "ListObjectsV2": 1,
            "Encrypt": 1,
            "PutObject": 1 + CHECKPOINT,
            "HeadObject": 1,
            "GetBucketVersioning": 1,
        }
    )


def test_restore_one_read_and_one_kms_call_per_key(
    counted: tuple[Session, Requests], trust_dir: Path, tmp_path: Path
) -> None:
    session, requests = counted
    backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    requests.take()
    out = tmp_path / "restored"
    report = restore_keys(
        session, team=TEAM, selection=Selection(everything=True), trust_dir=out, concurrency=4
    )
    assert len(report.entries) == N_KEYS
    counts = requests.take()
    # One ListObjectsV2 names the keys; one ListObjectVersions, made beside it, gives what
    # each signed chain is checked against (the version beneath the latest: none here), so
    # an old version copied on top is refused even on a machine that never saw the newer
    # one.
    assert counts == Counter(
        {
            "GetObject": N_KEYS,
            "Decrypt": N_KEYS,
            "ListObjectVersions": 1,
            "ListObjectsV2": 1,
            "PutObject": CHECKPOINT,
        }
    )
    restored = {p.name: p.read_bytes() for p in (out / "private").iterdir()}
    assert restored == {p.name: p.read_bytes() for p in (trust_dir / "private").iterdir()}


def test_a_restore_lists_past_the_audit_checkpoints(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every command that writes adds a checkpoint to the team's audit folder, which sorts
    before its keys: a restore's listings start past it (StartAfter, KeyMarker), so they
    do not grow with the store's history. Pages of N_KEYS + 1 here: the keys fit in one,
    the keys and the 4 checkpoints of these runs would not."""
    import keyvault.ops.authentic as authentic_module
    import keyvault.stores.s3 as s3_module

    session, requests = counted
    backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    for i in range(3):
        _restore_all(session, tmp_path / f"earlier-{i}")
    store = session.store()
    assert isinstance(store, S3Store)
    assert len(list(store.list(f"v1/teams/{TEAM}/audit/"))) == 4 * CHECKPOINT
    monkeypatch.setattr(s3_module, "_LIST_PAGE", N_KEYS + 1)
    monkeypatch.setattr(authentic_module, "AHEAD_PAGE", N_KEYS + 1)
    requests.take()
    report = _restore_all(session, tmp_path / "restored")
    assert len(report.entries) == N_KEYS
    counts = requests.take()
    assert counts["ListObjectsV2"] == 1 and counts["ListObjectVersions"] == 1, counts
    # fetch, drill and rewrap of many keys list their versions up front: a root key among
    # them makes that the team's folder, listed past the checkpoints too
    root = KeyAddress(TEAM, None, "root", "0" * 64)
    session.reader().prefetch([*_addresses(_keys(trust_dir)), root])
    assert requests.take() == Counter({"ListObjectVersions": 1})


def test_restoring_one_gun_lists_its_versions_once(
    counted: tuple[Session, Requests], trust_dir: Path, tmp_path: Path
) -> None:
    """Below the bulk size too: one listing of the GUN's versions, not one per key."""
    session, requests = counted
    backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    requests.take()
    report = restore_keys(
        session,
        team=TEAM,
        trust_dir=tmp_path / "one",
        selection=Selection(guns=("registry.example.com/counts/app-0",)),
    )
    assert len(report.entries) == 2
    # GetObject 3: the two keys, and the GUN's trust pin asked for by name (none here)
    assert requests.take() == Counter(
        {
            "ListObjectVersions": 1,
            "ListObjectsV2": 1,
            "GetObject": 3,
            "Decrypt": 2,
            "PutObject": CHECKPOINT,
        }
    )


def test_a_restore_on_a_new_machine_refuses_an_older_version_copied_on_top(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    tmp_path: Path,
    made_keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    """Through restore_keys: the versions listing made beside the names' proves the chain."""
    session, _ = counted
    _first_key_rolled_back(session, trust_dir, made_keys)
    with (
        _new_machine(session, tmp_path) as fresh,
        pytest.raises(IntegrityError, match=r"rollback.*older version.*beneath"),
    ):
        _restore_all(fresh, tmp_path / "new-trust")
    assert _nothing_in(tmp_path / "new-trust")


def _new_machine(session: Session, tmp_path: Path) -> Session:
    """A session as on a new machine: the owner's sealer pinned (as init does), no marks."""
    return Session(
        replace(
            session.config,
            trusted_sealers=(session.sealer().key.fingerprint,),
            paths=Paths(*(tmp_path / "new" / d for d in ("config", "data", "state"))),
        )
    )


def _restore_all(session: Session, out: Path) -> RestoreReport:
    return restore_keys(
        session, team=TEAM, selection=Selection(everything=True), trust_dir=out, concurrency=4
    )


def _nothing_in(out: Path) -> bool:
    private = out / "private"
    return not private.exists() or not any(private.iterdir())


def test_a_deleted_key_is_not_restored(
    counted: tuple[Session, Requests], trust_dir: Path, tmp_path: Path, s3_kms_backend: BackendSetup
) -> None:
    """A delete marker on top (an admin removed the object): the versions listing leaves it
    out, as a plain listing of the names would."""
    session, _ = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    gone = _addresses(keys)[0]
    store = session.store()
    assert isinstance(store, S3Store)
    store._client.delete_object(Bucket=store._bucket, Key=store._key(gone.object_name))
    report = restore_keys(
        session,
        team=TEAM,
        selection=Selection(everything=True),
        trust_dir=tmp_path / "restored",
        concurrency=4,
    )
    assert sorted(e.key.address for e in report.entries) == sorted(_addresses(keys)[1:])


def _fresh_reader(session: Session, tmp_path: Path) -> AuthenticReader:
    """A reader as on a new machine: the owner's sealer pinned, no high-water mark yet, so
    only the signed chain can tell a rollback."""
    return AuthenticReader(
        session.store(), session.sealers(), HighWater(tmp_path / "new-machine", session.store().uri)
    )


def _new_version(
    session: Session,
    trust_dir: Path,
    made_keys: dict[str, ec.EllipticCurvePrivateKey],
    key: KeyFile,
) -> None:
    """`notary key passwd` on one key, and its backup: a second version on top."""
    (trust_dir / "private" / key.relpath).write_bytes(
        notary_key_file(made_keys[key.relpath], key.role, key.gun, "new passphrase")
    )
    (changed,) = [k for k in _keys(trust_dir) if k.relpath == key.relpath]
    assert backup_keys(session, (changed,), team=TEAM)[0].action == UPDATED


def _first_key_rolled_back(
    session: Session, trust_dir: Path, made_keys: dict[str, ec.EllipticCurvePrivateKey]
) -> tuple[tuple[KeyFile, ...], KeyAddress]:
    """Every key backed up, then the first one's first version copied on top of its
    second: a rollback a store writer made. The keys, and the rolled-back one."""
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    victim = _addresses(keys)[0]
    store = session.store()
    first = store.read(victim.object_name)
    _new_version(session, trust_dir, made_keys, keys[0])
    store.write(victim.object_name, first.data, replaces=store.read(victim.object_name).version)
    return keys, victim


def _addresses(keys: tuple[KeyFile, ...]) -> list[KeyAddress]:
    return [KeyAddress(TEAM, k.gun, k.role, k.key_id) for k in keys]


def test_one_bulk_listing_still_refuses_an_older_version_copied_on_top(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    tmp_path: Path,
    made_keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    session, requests = counted
    keys, victim = _first_key_rolled_back(session, trust_dir, made_keys)
    reader = _fresh_reader(session, tmp_path)
    requests.take()
    reader.prefetch(_addresses(keys))
    for address in _addresses(keys)[1:]:
        reader.latest(address)
    with pytest.raises(IntegrityError, match=r"rollback.*older version.*beneath"):
        reader.latest(victim)
    counts = requests.take()
    assert counts == Counter({"ListObjectVersions": 1, "GetObject": N_KEYS})


def test_a_version_written_after_the_bulk_listing_is_checked_on_its_own(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    tmp_path: Path,
    made_keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    """A listing that is older than the latest version it is asked about is not trusted to
    know what lies beneath: that key's versions are listed again."""
    session, requests = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    reader = _fresh_reader(session, tmp_path)
    reader.prefetch(_addresses(keys))
    _new_version(session, trust_dir, made_keys, keys[0])
    requests.take()
    entry = reader.latest(_addresses(keys)[0])
    assert entry.envelope.chain is not None and entry.envelope.chain.sequence == 2
    assert requests.take() == Counter({"ListObjectVersions": 1, "GetObject": 2})


def test_writes_are_sent_in_one_go_without_waiting_for_100_continue(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    """botocore asks for ``100 Continue`` before any file-like body: one more round trip
    per write, for envelopes of a few KB. The store drops that header."""
    session, _ = counted
    sent: list[dict[str, Any]] = []
    client = session.store()._client  # type: ignore[attr-defined]
    client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    assert len(sent) == N_KEYS + CHECKPOINT
    assert all("Expect" not in headers for headers in sent), sent[0]
    assert all(headers.get("If-None-Match") == b"*" for headers in sent)


def test_the_vault_change_marker_setting_changes_nothing_on_s3(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    """``[vault] change_marker`` is Vault's: on S3 a backup of one key still reads it
    (no listing of the team), and a bulk one lists once, as without the setting."""
    session, requests = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    settings = {**session.config.settings, "vault": {"change_marker": True}}
    session.config = replace(session.config, settings=settings)
    requests.take()
    assert [o.action for o in backup_keys(session, keys[:1], team=TEAM)] == [UNCHANGED]
    assert requests.take() == Counter({"GetObject": 1})
    assert {o.action for o in backup_keys(session, keys, team=TEAM)} == {UNCHANGED}
    assert requests.take() == Counter({"ListObjectsV2": 1})


def _leaving_out(
    monkeypatch: pytest.MonkeyPatch, session: Session, left_out: KeyAddress
) -> list[int | None]:
    """The store's paged versions listing leaves ``left_out`` out, as SeaweedFS's may
    (tests/aws/test_s3_store.py); returns the page size of every listing asked for."""
    store = session.store()
    assert isinstance(store, S3Store)
    listing = store.versions_pages
    asked: list[int | None] = []

    def versions_pages(
        prefix: str, *, page_size: int | None = None, after: str = ""
    ) -> Iterator[VersionPage]:
        asked.append(page_size)
        for page in listing(prefix, page_size=page_size, after=after):
            kept = {n: v for n, v in page.versions.items() if n != left_out.object_name}
            yield VersionPage(kept, page.before)

    monkeypatch.setattr(store, "versions_pages", versions_pages)
    return asked


@pytest.mark.proves("T2")
def test_a_restore_reads_the_versions_of_a_key_the_versions_listing_left_out(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keys are named by the plain listing; the versions listing made beside it only
    saves a request per key. A key it leaves out is restored all the same, with its
    versions listed on its own."""
    session, requests = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    asked = _leaving_out(monkeypatch, session, _addresses(keys)[1])
    requests.take()
    report = _restore_all(session, tmp_path / "restored")
    assert sorted(e.key.address for e in report.entries) == sorted(_addresses(keys))
    assert asked == [AHEAD_PAGE]
    counts = requests.take()
    assert counts["ListObjectsV2"] == 1 and counts["GetObject"] == N_KEYS
    assert counts["ListObjectVersions"] == 2  # the bulk listing, and the left-out key's own


@pytest.mark.proves("T2")
def test_a_key_the_versions_listing_left_out_is_still_refused_when_rolled_back(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    tmp_path: Path,
    made_keys: dict[str, ec.EllipticCurvePrivateKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a new machine only the signed chain tells a rollback: the versions of a key the
    bulk listing left out are listed on their own, and an older version on top refused."""
    session, _ = counted
    _keys_backed_up, victim = _first_key_rolled_back(session, trust_dir, made_keys)
    with _new_machine(session, tmp_path) as fresh:
        asked = _leaving_out(monkeypatch, fresh, victim)
        with pytest.raises(IntegrityError, match=rf"{victim.key_id}.*rollback.*beneath"):
            _restore_all(fresh, tmp_path / "new-trust")
    assert asked == [AHEAD_PAGE]
    assert _nothing_in(tmp_path / "new-trust")


def test_a_versions_listing_that_fails_fails_the_restore_before_any_key_is_opened(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing made beside the names' runs in its own thread: its error is the
    restore's, raised by the first chain check, and no key is unwrapped or written."""
    session, requests = counted
    backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    store = session.store()

    def versions_pages(
        prefix: str, *, page_size: int | None = None, after: str = ""
    ) -> Iterator[VersionPage]:
        if prefix:  # a generator, as the store's: it fails in the listing's own thread
            raise AccessDeniedError(
                f"store {store.uri}: access denied: list the versions under {prefix}"
            )
        yield from ()

    monkeypatch.setattr(store, "versions_pages", versions_pages)
    requests.take()
    out = tmp_path / "restored"
    with pytest.raises(AccessDeniedError, match="list the versions under"):
        _restore_all(session, out)
    counts = requests.take()
    assert not any(counts[op] for op in KMS_OPS), counts
    assert _nothing_in(out)


@pytest.mark.proves("T2")
def test_a_restore_restores_the_keys_of_sibling_folders_seaweedfs_leaves_out(
    counted: tuple[Session, Requests], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GUNs ``org/app``, ``org/app-web``, ``org/app.io``, ``org/app_x``: SeaweedFS's paged
    versions listing leaves some of their folders out (tests/aws/test_s3_store.py). Pages
    of 2 make it show with a few keys; every key comes back, byte for byte."""
    import keyvault.ops.authentic as authentic_module
    import keyvault.stores.s3 as s3_module

    session, _ = counted
    trust = tmp_path / "siblings"
    private = trust / "private"
    private.mkdir(parents=True, mode=0o700)
    for gun in ("app", "app-web", "app.io", "app_x"):
        for role in ("targets", "snapshot"):
            key = ec.generate_private_key(ec.SECP256R1())
            target = private / f"{private_key_id(key)}.key"
            target.write_bytes(notary_key_file(key, role, f"registry.example.com/org/{gun}", ""))
            target.chmod(0o600)
    keys = scan_trust_dir(trust).keys
    assert {o.action for o in backup_keys(session, keys, team=TEAM, concurrency=4)} == {CREATED}
    monkeypatch.setattr(s3_module, "_LIST_PAGE", 2)
    monkeypatch.setattr(authentic_module, "AHEAD_PAGE", 2)
    store = session.store()
    assert isinstance(store, S3Store)
    left_out = {a.object_name for a in _addresses(keys)} - set(
        store.versions_under(f"v1/teams/{TEAM}/")
    )
    out = tmp_path / "restored"
    report = _restore_all(session, out)
    assert sorted(e.key.address for e in report.entries) == sorted(_addresses(keys)), left_out
    restored = {p.name: p.read_bytes() for p in (out / "private").rglob("*.key")}
    assert restored == {p.name: p.read_bytes() for p in private.iterdir()}
