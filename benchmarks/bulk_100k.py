"""Scale benchmark: a store of up to 100,000 keys, 1,000 GUNs, 50 teams (S3 + KMS).

    python benchmarks/bulk_100k.py [--sizes 100,10000,30000] [--listing 10000,100000]
                                   [--jobs 8] [--rounds 5] [--json FILE]

It starts its own ``weed mini`` and ``moto_server`` (benchmarks/bulk_s3_kms.py's
helpers) and, for each store size in ``--sizes``, seeds a fresh store prefix:

- **three real notary keys of one GUN**, made by the real ``notary`` binary
  (``key import``, as the tests' notarykit does): its targets and snapshot keys,
  backed up with ``keyvault.ops.backup.backup_keys``, and a ``targets/releases``
  delegation key sealed under the GUN as the fillers are (notary writes no
  ``gun:`` header into a delegation key file, so a backup files it GUN-less);
- **the rest, filler envelopes sealed by keyvault's own code**:
  ``envelope.new_header`` + ``envelope.seal`` (a fresh data key per envelope,
  wrapped by one real KMS ``Encrypt`` call, signed by the run's Ed25519 sealer)
  + ``store.write`` (a create-only PutObject), exactly what a backup does per
  key. Only the sealed plaintext is not a real key file (random bytes of a
  key file's size): generating 100,000 notary keys takes hours on two cores.
  Keys are spread over 1,000 GUNs of 50 teams (targets, snapshot, then
  delegation keys ``targets/dNNN`` per GUN); no shortcut shares a data key.

Seeding is timed and reported on its own. Then, each in a fresh child
process (its own ``ru_maxrss``), median of ``--rounds``:

- **one GUN's restore** (``restore_keys --gun <the real GUN>``: its 3 keys)
  and **fetch** (``fetch_keys``, what ``exec`` and ``fetch`` run), once with a
  fresh state directory (a new machine) and once on a machine whose high-water
  marks hold every seeded key (the seeding machine's marks);
- **listing**: the ``keyvault list`` CLI (plain and ``--json``) over a store
  prefix of ``--listing`` names of one team, in a child process: time to the
  first key printed, time to the end, and its peak RSS (``VmHWM``, read by the
  process itself at exit: a child's ``ru_maxrss`` starts at its parent's RSS,
  inherited through fork and kept across exec). ``list`` without ``--long``
  reads no object, so these names are written with a placeholder body (one
  PutObject each, no KMS call); ``--long`` is measured over the real
  envelopes of the largest seeded store's team.

Requests are counted with botocore ``before-send`` hooks. A benchmark, not a
test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bulk_s3_kms import _open_counted, bucket_and_key, servers  # noqa: E402

TEAMS = 50
GUNS = 1000
REAL_TEAM = "team-00"
REAL_GUN = "registry.example.com/team-00/real"
LIST_TEAM = "team-00"
FILLER_BYTES = 460  # an encrypted PKCS#8 P-256 notary key file's size


def team_of(gun_index: int) -> str:
    return f"team-{gun_index % TEAMS:02d}"


def gun_of(gun_index: int) -> str:
    return f"registry.example.com/{team_of(gun_index)}/repo-{gun_index:04d}"


def role_of(slot: int) -> str:
    return ("targets", "snapshot")[slot] if slot < 2 else f"targets/d{slot - 2:03d}"


def filler_addresses(count: int) -> Iterator[Any]:
    """``count`` key addresses over up to 1,000 GUNs of 50 teams, round-robin over GUNs."""
    from keyvault.names import KeyAddress

    guns = max(1, min(GUNS, count // 3))
    for i in range(count):
        g, slot = i % guns, i // guns
        yield KeyAddress(
            team_of(g), gun_of(g), role_of(slot), hashlib.sha256(f"filler-{i}".encode()).hexdigest()
        )


# -- configuration shared by the parent and the children --------------------------------


def session_of(spec: dict[str, Any], team: str, state: Path) -> Any:
    from keyvault.config import Config, Paths
    from keyvault.ops.session import Session

    config = Config(
        source=None,
        paths=Paths(state / "config", state / "data", state / "state"),
        team=team,
        store=spec["store"],
        wrappers=(spec["wrapper"],),
        trust_dir=state / "trust",
        identity_files=(),
        settings={"s3": spec["s3"], "awskms": spec["kms"]},
        concurrency=spec["jobs"],
        audit_to_store=False,
        env=spec["env"],
        sealing_key=spec["sealer"],
        trusted_sealers=tuple(spec["trusted"]),
    )
    return Session(config)


def config_toml(spec: dict[str, Any], team: str, state: Path) -> Path:
    """A config file for the CLI, equivalent to session_of."""
    path = state / "config.toml"
    state.mkdir(parents=True, exist_ok=True)
    lines = [
        "[keyvault]",
        f"team = {json.dumps(team)}",
        f"store = {json.dumps(spec['store'])}",
        f"wrappers = [{json.dumps(spec['wrapper'])}]",
        "audit_to_store = false",
        "[sealing]",
        f"key = {json.dumps(spec['sealer'])}",
        f"trusted = {json.dumps(spec['trusted'])}",
        "[s3]",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in spec["s3"].items()]
    lines += ["[awskms]"] + [f"{k} = {json.dumps(v)}" for k, v in spec["kms"].items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


# -- seeding (parent process) -----------------------------------------------------------


def seed(spec: dict[str, Any], count: int, work: Path, notary_dir: Path) -> dict[str, Any]:
    """The real GUN's 3 notary keys through backup_keys, then ``count - 3`` filler envelopes
    sealed with envelope.seal and written create-only, ``jobs`` at a time. Every
    written key's high-water mark is kept (the seeding machine's marks)."""
    from keyvault.envelope import new_header, seal
    from keyvault.ops.backup import backup_keys
    from keyvault.trust.scan import scan_trust_dir

    state = work / f"seed-state-{count}"
    start = time.perf_counter()
    with session_of(spec, REAL_TEAM, state) as session:
        keys = scan_trust_dir(notary_dir, keep_bytes=False).keys
        real = backup_keys(
            session, keys, team=REAL_TEAM, concurrency=spec["jobs"], trust_dir=notary_dir
        )
        assert all(o.action == "created" for o in real), [o.action for o in real]
        store, wrappers, sealer, marks = (
            session.store(),
            session.wrappers(),
            session.sealer(),
            session.highwater(),
        )
        seal_delegation(session, notary_dir)
        counter = _open_counted(session)
        done = [0]
        lock = threading.Lock()

        def one(address: Any) -> None:
            data = secrets.token_bytes(FILLER_BYTES)
            header = new_header(
                address=address,
                algorithm="ecdsa",
                source_name=f"{address.key_id}.key",
                source_mode=0o600,
                data=data,
            )
            payload = seal(header, data, wrappers, sealer=sealer).to_bytes()
            store.write(address.object_name, payload)
            marks.note(address.object_name, 1, hashlib.sha256(payload).hexdigest())
            with lock:
                done[0] += 1
                if done[0] % 5000 == 0:
                    print(
                        f"  seeded {done[0]} in {time.perf_counter() - start:.0f} s",
                        file=sys.stderr,
                    )

        with ThreadPoolExecutor(max_workers=spec["jobs"]) as pool:
            for _ in pool.map(one, filler_addresses(count - len(real) - 1)):
                pass
        marks.save()
    seconds = time.perf_counter() - start
    return {
        "keys": count,
        "seconds": seconds,
        "per_second": count / seconds,
        "requests": dict(counter.counts),
        "state": str(state),
    }


def seal_delegation(session: Any, notary_dir: Path) -> None:
    """The notary-made targets/releases key, sealed under the real GUN."""
    from keyvault.envelope import new_header, seal
    from keyvault.names import KeyAddress

    (path,) = [
        p
        for p in (notary_dir / "private").glob("*.key")
        if b"role: targets/releases" in p.read_bytes()
    ]
    data = path.read_bytes()
    address = KeyAddress(REAL_TEAM, REAL_GUN, "targets/releases", path.stem)
    header = new_header(
        address=address, algorithm="ecdsa", source_name=path.name, source_mode=0o600, data=data
    )
    payload = seal(header, data, session.wrappers(), sealer=session.sealer()).to_bytes()
    session.store().write(address.object_name, payload)
    session.highwater().note(address.object_name, 1, hashlib.sha256(payload).hexdigest())


def seed_names(admin: Any, bucket: str, prefix: str, count: int, jobs: int) -> dict[str, Any]:
    """``count`` key names of one team with a placeholder body (names-only listing)."""
    from keyvault.names import KeyAddress

    start = time.perf_counter()
    guns = max(1, count // 100)

    def one(i: int) -> None:
        address = KeyAddress(
            LIST_TEAM,
            f"registry.example.com/{LIST_TEAM}/r{i % guns:05d}",
            role_of(i // guns),
            hashlib.sha256(b"n%d" % i).hexdigest(),
        )
        admin.put_object(Bucket=bucket, Key=f"{prefix}/{address.object_name}", Body=b"{}")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for _ in pool.map(one, range(count)):
            pass
    seconds = time.perf_counter() - start
    return {"keys": count, "seconds": seconds, "per_second": count / seconds}


# -- measured phases (child processes) --------------------------------------------------


def phase_restore_gun(spec: dict[str, Any]) -> dict[str, Any]:
    from keyvault.ops.restore import restore_keys
    from keyvault.ops.selection import Selection

    with session_of(spec, REAL_TEAM, Path(spec["state"])) as session:
        counter = _open_counted(session)
        start = time.perf_counter()
        report = restore_keys(
            session,
            team=REAL_TEAM,
            selection=Selection(guns=(REAL_GUN,)),
            trust_dir=Path(spec["out"]),
            concurrency=spec["jobs"],
        )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "keys": len(report.entries), "requests": dict(counter.counts)}


def phase_fetch_gun(spec: dict[str, Any]) -> dict[str, Any]:
    from keyvault.ops.ci import FetchRequest, fetch_keys

    with session_of(spec, REAL_TEAM, Path(spec["state"])) as session:
        counter = _open_counted(session)
        start = time.perf_counter()
        found = fetch_keys(
            session, REAL_TEAM, FetchRequest(REAL_GUN), Path(spec["out"]), purpose="benchmark"
        )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "keys": len(found), "requests": dict(counter.counts)}


PHASES = {"restore-gun": phase_restore_gun, "fetch-gun": phase_fetch_gun}


def run_phase(
    phase: str, spec: dict[str, Any], work: Path, marks_from: str | None
) -> dict[str, Any]:
    """One phase in a fresh child with a fresh state directory (``marks_from``: a copy of
    that state's high-water marks, as on the machine that wrote them)."""
    import shutil

    state = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    if marks_from is not None:
        shutil.copytree(Path(marks_from) / "state" / "highwater", state / "state" / "highwater")
    full = {**spec, "phase": phase, "state": str(state), "out": str(state / "out")}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(full)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(state)
    return result


def worker(spec: dict[str, Any]) -> None:
    result = PHASES[spec["phase"]](spec)
    result["maxrss_kib"] = vm_hwm_kib()
    print(json.dumps(result))


def vm_hwm_kib() -> int:
    """This process's peak RSS (``ru_maxrss`` would start at the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


#: Runs the CLI and, at exit, writes its own peak RSS as the last line of stderr.
CLI = (
    "import atexit, runpy, sys\n"
    "from bulk_100k import vm_hwm_kib\n"
    "atexit.register(lambda: sys.stderr.write(f'\\nVmHWM {vm_hwm_kib()}\\n'))\n"
    "sys.argv[0] = 'keyvault'\n"
    "runpy.run_module('keyvault', run_name='__main__')\n"
)


def run_list_cli(spec: dict[str, Any], work: Path, args: list[str]) -> dict[str, Any]:
    """``keyvault list ARGS`` as a user runs it: time to the first key line, to the end,
    and the process's peak RSS."""
    state = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    config = config_toml(spec, LIST_TEAM, state)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(state),
        "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}",
        "XDG_STATE_HOME": str(state / "xdg-state"),
        "XDG_DATA_HOME": str(state / "xdg"),
        "XDG_CONFIG_HOME": str(state / "xdg-config"),
        "KEYVAULT_CONFIG": str(config),
        **spec["env"],
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "list", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first: float | None = None
    lines = 0
    marker = b'"key_id"' if "--json" in args else b"team-00"
    for line in proc.stdout:
        if first is None and marker in line:
            first = time.perf_counter() - start
        lines += 1
    err = proc.stderr.read()
    proc.wait()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"keyvault list {args} failed: {err.decode()[-2000:]}")
    return {
        "seconds": seconds,
        "first_key_seconds": first,
        "lines": lines,
        "maxrss_kib": int(err.decode().rsplit("VmHWM ", 1)[1].split()[0]),
    }


def median_of(rounds: int, measure: Any) -> dict[str, Any]:
    runs = [measure() for _ in range(rounds)]
    ranked = sorted(runs, key=lambda r: r["seconds"])
    return {**ranked[len(ranked) // 2], "all_seconds": [round(r["seconds"], 4) for r in runs]}


# -- main -------------------------------------------------------------------------------


def make_notary_keys(work: Path) -> Path:
    """The real GUN's targets, snapshot and targets/releases keys, imported by notary."""
    from fixtures.components import find_tool
    from notarykit import Notary, fresh_ec_pem

    trust = work / "notary-trust"
    home = work / "notary-home"
    home.mkdir()
    notary = Notary(find_tool("notary"), home)
    for role in ("targets", "snapshot", "targets/releases"):
        notary.import_key(trust, fresh_ec_pem(), role, REAL_GUN)
    return trust


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100,10000,30000", help="store sizes to seed with real envelopes (keys)"
    )
    parser.add_argument(
        "--listing",
        default="10000,100000",
        help="names of one team for the names-only list (0: skip)",
    )
    parser.add_argument(
        "--long",
        type=int,
        default=1,
        help="also time 'list --long' over the largest seeded store's team",
    )
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    listing = [int(s) for s in args.listing.split(",") if s and int(s) > 0]
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "rounds": args.rounds,
        "seed": {},
        "restore": {},
        "listing": {},
    }
    with tempfile.TemporaryDirectory(prefix="kv-scale-") as tmp:
        work = Path(tmp)
        notary_dir = make_notary_keys(work)
        with servers(work) as (s3_url, kms_url):
            run(args, results, work, notary_dir, sizes, listing, s3_url, kms_url)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def run(
    args: argparse.Namespace,
    results: dict[str, Any],
    work: Path,
    notary_dir: Path,
    sizes: list[int],
    listing: list[int],
    s3_url: str,
    kms_url: str,
) -> None:
    from keyvault.sealing import Ed25519FileSealer

    bucket = "kv-scale"
    admin, _, _, env = bucket_and_key(s3_url, kms_url, work, bucket)
    sealer = Ed25519FileSealer.generate(work / "sealer.key")
    common = {
        "env": env,
        "jobs": args.jobs,
        "wrapper": "awskms:///alias/kv-scale",
        "s3": {"endpoint_url": s3_url, "region": "us-east-1", "addressing_style": "path"},
        "kms": {"endpoint_url": kms_url, "region": "us-east-1"},
        "sealer": str(sealer.path),
        "trusted": [sealer.key.fingerprint],
    }
    specs: dict[int, dict[str, Any]] = {}
    for size in sizes:
        spec = specs[size] = {**common, "store": f"s3://{bucket}/scale-{size}"}
        found = results["seed"][str(size)] = seed(spec, size, work, notary_dir)
        print(
            f"seeded {size} keys in {found['seconds']:.1f} s "
            f"({found['per_second']:.0f}/s): {found['requests']}",
            file=sys.stderr,
        )
    # Rounds interleave the store sizes, so a drift in the servers' speed hits them alike.
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for size in sizes:
            marks = results["seed"][str(size)]["state"]
            for phase in ("restore-gun", "fetch-gun"):
                for label, source in ((phase, None), (f"{phase}-marks", marks)):
                    runs.setdefault((size, label), []).append(
                        run_phase(phase, specs[size], work, source)
                    )
    for (size, label), rounds in runs.items():
        ranked = sorted(rounds, key=lambda r: r["seconds"])
        results["restore"].setdefault(str(size), {})[label] = {
            **ranked[len(ranked) // 2],
            "all_seconds": [round(r["seconds"], 3) for r in rounds],
        }
        print(f"{size}: {label} {[round(r['seconds'], 3) for r in rounds]}", file=sys.stderr)
    for count in listing:
        spec = {**common, "store": f"s3://{bucket}/names-{count}"}
        names = seed_names(admin, bucket, f"names-{count}", count, args.jobs * 2)
        out: dict[str, Any] = {"seed": names}
        results["listing"][str(count)] = out
        for label, cli_args in (("list", []), ("list --json", ["--json"])):
            out[label] = median_of(
                max(1, args.rounds // 2), lambda a=cli_args, s=spec: run_list_cli(s, work, a)
            )
            print(f"{count}: {label} {out[label]}", file=sys.stderr)
    if args.long and sizes:
        size = max(sizes)
        long = run_list_cli(specs[size], work, ["--long", "--json"])
        results["listing"][f"long-{size}"] = {"list --long --json": long}
        print(f"long {size}: {long}", file=sys.stderr)


def report(r: dict[str, Any]) -> None:
    print(f"{r['cpus']} CPUs, --jobs {r['jobs']}, median of {r['rounds']} rounds\n")
    print("| store (S3, SeaweedFS) | seeding s | envelopes/s | requests |")
    print("|---|---|---|---|")
    for size, s in r["seed"].items():
        print(
            f"| {size} keys | {s['seconds']:.1f} | {s['per_second']:.0f} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(s['requests'].items()))} |"
        )
    print(
        "\n| store keys | phase | fresh machine s (all rounds) | requests | "
        "machine with every mark s | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|")
    for size, phases in r["restore"].items():
        for phase in ("restore-gun", "fetch-gun"):
            p, m = phases[phase], phases[f"{phase}-marks"]
            print(
                f"| {size} | {phase} | {p['seconds']:.3f} ({p['all_seconds']}) | "
                f"{', '.join(f'{k} {v}' for k, v in sorted(p['requests'].items()))} | "
                f"{m['seconds']:.3f} ({m['all_seconds']}) | "
                f"{p['maxrss_kib'] / 1024:.1f} / {m['maxrss_kib'] / 1024:.1f} |"
            )
    print("\n| listed keys | command | first key s | total s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for count, runs in r["listing"].items():
        for label, m in runs.items():
            if label == "seed":
                continue
            print(
                f"| {count} | keyvault {label} | {m['first_key_seconds']} | "
                f"{m['seconds']:.2f} | {m['maxrss_kib'] / 1024:.1f} |"
            )
    sizes = sorted(int(k) for k in r["restore"])
    if len(sizes) >= 2:
        lo, hi = str(sizes[0]), str(sizes[-1])
        for phase in ("restore-gun", "fetch-gun", "restore-gun-marks", "fetch-gun-marks"):
            ratio = r["restore"][hi][phase]["seconds"] / r["restore"][lo][phase]["seconds"]
            print(f"\n{phase}: {hi} keys / {lo} keys = {ratio:.2f}x", end="")
        print()


if __name__ == "__main__":
    sys.exit(main())
