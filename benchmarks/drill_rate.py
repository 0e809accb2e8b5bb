"""Drill pace: the request rate KMS (moto) sees for each ``--rate``, and a throttled run.

    python benchmarks/drill_rate.py [--keys 400] [--rates 25,50,100,200,400,800]
                                    [--jobs 8] [--throttle 40] [--json FILE]

It writes ``--keys`` Notary-format keys (benchmarks/bulk_s3_kms.py's generator),
starts ``moto_server`` on 127.0.0.1, and puts the tests' throttling proxy
(tests/fixtures/throttling.py) in front of it, which records when each
``Decrypt`` arrives. The keys are backed up into a file store, wrapped by a
KMS key in moto; then ``keyvault.ops.drill.run_drill`` (what ``keyvault drill
--all --no-metadata`` runs) drills all of them once per rate, ``--jobs``
unwraps at a time. For each run it reports what the drill says (requests,
achieved rate) and what the service saw: the most Decrypts that arrived in any
one-second window, and their mean rate. A last run at 100/s has the proxy
answer the first ``--throttle`` Decrypts with KMS's ThrottlingException
(``[awskms] max_attempts = 1``, so every one reaches the drill's backoff).

A benchmark, not a test: the figures depend on the machine; the tests assert on
the token bucket with an injected clock (tests/core/test_pacing.py).
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

TEAM = "bench"
ALIAS = "alias/kv-drill-rate"


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any window of one second."""
    times = sorted(arrivals)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def mean_rate(arrivals: list[float]) -> float | None:
    if len(arrivals) < 2 or max(arrivals) == min(arrivals):
        return None
    return (len(arrivals) - 1) / (max(arrivals) - min(arrivals))


def session_for(
    work: Path, kms: dict[str, Any], jobs: int, sealer: Any, env: dict[str, str]
) -> Any:
    from keyvault.config import Config, Paths
    from keyvault.ops.session import Session

    state = work / "state"
    config = Config(
        source=None,
        paths=Paths(state / "config", state / "data", state / "state"),
        team=TEAM,
        store=(work / "store").as_uri(),
        wrappers=(f"awskms:///{ALIAS}",),
        trust_dir=work / "trust",
        identity_files=(),
        settings={"awskms": kms},
        concurrency=jobs,
        audit_to_store=False,
        env=env,
        sealing_key=str(sealer.path),
        trusted_sealers=(sealer.key.fingerprint,),
    )
    return Session(config)


def drill_once(
    work: Path,
    kms: dict[str, Any],
    jobs: int,
    sealer: Any,
    env: dict[str, str],
    rate: float,
    proxy: Any,
    throttle: int = 0,
) -> dict[str, Any]:
    from keyvault.ops.drill import new_report, run_drill
    from keyvault.ops.pacing import Pacer
    from keyvault.ops.selection import Selection

    proxy.reset(throttle=throttle)
    pacer = Pacer(rate)
    everything = Selection(everything=True)
    with session_for(work, kms, jobs, sealer, env) as session:
        report = new_report(
            session, team=TEAM, selection=everything, wrappers=session.config.wrappers
        )
        start = time.perf_counter()
        run_drill(
            session,
            report,
            selection=everything,
            wrappers=session.config.wrappers,
            source=None,
            env={},
            pacer=pacer,
        )
        seconds = time.perf_counter() - start
    stats = pacer.stats()
    return {
        "rate": rate,
        "seconds": seconds,
        "keys": len(report.checks),
        "passed": sum(c.passed for c in report.checks),
        "failed": sum(c.failed for c in report.checks),
        "requests": stats.requests,
        "achieved_rate": stats.achieved_rate,
        "throttled": stats.throttled,
        "backoff_s": stats.backoff_s,
        "service_calls": proxy.calls,
        "service_busiest_second": busiest_second(proxy.arrivals),
        "service_mean_rate": mean_rate(proxy.arrivals),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--rates", default="25,50,100,200,400,800")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument(
        "--throttle",
        type=int,
        default=40,
        help="Decrypts the proxy throttles in the last run (0: skip it)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from bulk_s3_kms import make_trust_dir
    from fixtures.kms import _moto_cmd, _ready, kms_client
    from fixtures.servers import free_port, running, start_server
    from fixtures.throttling import ThrottlingProxy

    from keyvault.ops.backup import backup_keys
    from keyvault.sealing import Ed25519FileSealer
    from keyvault.trust.scan import scan_trust_dir

    results: dict[str, Any] = {"keys": args.keys, "jobs": args.jobs, "runs": []}
    with tempfile.TemporaryDirectory(prefix="kv-drill-rate-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        make_trust_dir(work / "trust", args.keys)
        print(f"generated {args.keys} keys in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with running(
            lambda: start_server(_moto_cmd(port), work / "moto.log", lambda: _ready(endpoint))
        ):
            client = kms_client(endpoint)
            meta = client.create_key(Description="keyvault drill-rate benchmark")["KeyMetadata"]
            client.create_alias(AliasName=ALIAS, TargetKeyId=meta["KeyId"])
            proxy = ThrottlingProxy(port)
            env = {
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(work / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"),
            }
            kms = {"endpoint_url": proxy.endpoint, "region": "us-east-1"}
            sealer = Ed25519FileSealer.generate(work / "sealer.key")
            start = time.perf_counter()
            from keyvault.plugins import BackendOptions
            from keyvault.stores import open_store

            open_store((work / "store").as_uri(), BackendOptions(env=env), create=True)
            with session_for(work, kms, args.jobs, sealer, env) as session:
                keys = scan_trust_dir(work / "trust", keep_bytes=False).keys
                backup_keys(
                    session, keys, team=TEAM, concurrency=args.jobs, trust_dir=work / "trust"
                )
            print(
                f"backed up in {time.perf_counter() - start:.1f} s (seeding, not measured)",
                file=sys.stderr,
            )
            for rate in [float(r) for r in args.rates.split(",") if r]:
                run = drill_once(work, kms, args.jobs, sealer, env, rate, proxy)
                results["runs"].append(run)
                print(json.dumps(run), file=sys.stderr)
            if args.throttle:
                run = drill_once(
                    work,
                    {**kms, "max_attempts": 1},
                    args.jobs,
                    sealer,
                    env,
                    100.0,
                    proxy,
                    throttle=args.throttle,
                )
                results["throttled_run"] = run
                print(json.dumps(run), file=sys.stderr)
            proxy.close()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict[str, Any]) -> None:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    print(
        f"\n{results['keys']} keys, file store, KMS = moto on 127.0.0.1, "
        f"{results['jobs']} unwraps at a time\n"
    )
    print(
        "| --rate | drill time s | Decrypt requests | achieved (drill) /s "
        "| mean (service) /s | busiest second (service) | passed |"
    )
    print("|---|---|---|---|---|---|---|")
    runs = list(results["runs"])
    if "throttled_run" in results:
        runs.append(results["throttled_run"])
    for r in runs:
        label = f"{r['rate']:g}" + (
            f" (first {r['throttled']} throttled)" if r["throttled"] else ""
        )
        print(
            f"| {label} | {r['seconds']:.1f} | {r['requests']} | {rate(r['achieved_rate'])} "
            f"| {rate(r['service_mean_rate'])} | {r['service_busiest_second']} "
            f"| {r['passed']}/{r['keys']} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
