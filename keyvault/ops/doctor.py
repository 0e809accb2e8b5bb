"""``keyvault doctor``: is this machine set up to back up and restore, and if not, why.

Each check is independent and reports ok / warn / fail with a sentence that
says what to do. Nothing secret is shown (every finding is redacted: a URI's
userinfo, a pkcs11: ``pin-value``), and nothing is written except a
wrap-and-unwrap of a throw-away data key through each wrapper (which proves
the wrapper is reachable and usable, not merely configured).
"""

from __future__ import annotations

import email.utils
import os
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from keyvault.config import Config
from keyvault.errors import KeyvaultError
from keyvault.plugins import SecretPrompt
from keyvault.redact import redact

OK, WARN, FAIL = "ok", "warn", "fail"
MAX_SKEW_SECONDS = 120


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    detail: str


def run_checks(config: Config, prompt: SecretPrompt | None) -> list[Finding]:
    checks: list[Callable[[Config, SecretPrompt | None], Iterator[Finding]]] = [
        _config_file,
        _trust_dir,
        _identities,
        _store,
        _wrappers,
        _clock,
    ]
    findings: list[Finding] = []
    for check in checks:
        try:
            findings.extend(check(config, prompt))
        except KeyvaultError as exc:
            findings.append(Finding(check.__name__.strip("_"), FAIL, str(exc)))
    return [Finding(f.check, f.status, redact(f.detail)) for f in findings]


def _mode_finding(name: str, path: Path, want: int) -> Finding:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~want & 0o077:
        return Finding(
            name, WARN, f"{path} is {mode:04o}; others can reach it (chmod {want:o} {path})"
        )
    return Finding(name, OK, f"{path} is {mode:04o}")


def _config_file(config: Config, prompt: SecretPrompt | None) -> Iterator[Finding]:
    if config.source is None:
        yield Finding("config", WARN, "no config file; run 'keyvault init'")
        return
    yield _mode_finding("config", config.source, 0o600)


def _trust_dir(config: Config, prompt: SecretPrompt | None) -> Iterator[Finding]:
    from keyvault.trust.scan import scan_trust_dir

    if not config.trust_dir.exists():
        yield Finding(
            "trust-dir",
            WARN,
            f"{config.trust_dir} does not exist (nothing to back up yet; a restore creates it)",
        )
        return
    yield _mode_finding("trust-dir", config.trust_dir, 0o700)
    result = scan_trust_dir(config.trust_dir)
    loose = [k for k in result.keys if k.mode & 0o077]
    yield Finding(
        "trust-dir",
        WARN if loose else OK,
        f"{len(result.keys)} key files, {len(result.problems)} problems"
        + (f"; {len(loose)} readable by others (chmod 600)" if loose else ""),
    )


def _identities(config: Config, prompt: SecretPrompt | None) -> Iterator[Finding]:
    for path in config.identity_files:
        if not path.exists():
            yield Finding(
                "recovery-identity",
                WARN,
                f"{path} is not on this machine (fine if it is kept offline; needed to restore)",
            )
        else:
            yield _mode_finding("recovery-identity", path, 0o600)


def _store(config: Config, prompt: SecretPrompt | None) -> Iterator[Finding]:
    from keyvault.names import team_prefix
    from keyvault.stores import open_store

    store = open_store(config.require_store(), config.backend_options(prompt))
    try:
        count = sum(1 for _ in store.list(team_prefix(config.team)))
    finally:
        store.close()
    yield Finding(
        "store", OK, f"{config.store} is reachable; {count} objects for team {config.team}"
    )


def _wrappers(config: Config, prompt: SecretPrompt | None) -> Iterator[Finding]:
    from keyvault.wrappers import open_wrapper

    context = {"keyvault:team": config.team, "keyvault:role": "doctor", "keyvault:key_id": "0" * 64}
    for uri in config.require_wrappers():
        dek = os.urandom(32)
        try:
            wrapper = open_wrapper(uri, config.backend_options(prompt))
            try:
                wrapped = wrapper.wrap(dek, context)
                try:
                    back = wrapper.unwrap(wrapped, context)
                    status, detail = (
                        (OK, "wraps and unwraps a test key")
                        if back == dek
                        else (FAIL, "unwrapped a different key")
                    )
                except KeyvaultError as exc:
                    status, detail = (
                        WARN,
                        f"wraps, but cannot unwrap here: {exc} (fine for an offline recovery key)",
                    )
            finally:
                wrapper.close()
        except KeyvaultError as exc:
            status, detail = FAIL, str(exc)
        yield Finding("wrapper", status, f"{uri}: {detail}")


def _clock(config: Config, prompt: SecretPrompt | None) -> Iterator[Finding]:
    """Clock skew against the HTTP endpoints keyvault talks to (signatures and tokens expire)."""
    endpoints = {
        v
        for section in ("s3", "awskms", "vault")
        for k, v in config.settings.get(section, {}).items()
        if k in ("endpoint_url", "address")
    }
    if config.env.get("VAULT_ADDR"):
        endpoints.add(config.env["VAULT_ADDR"])
    for url in sorted(str(e) for e in endpoints if str(e).startswith(("http://", "https://"))):
        try:
            request = urllib.request.Request(url, method="HEAD")  # noqa: S310 - scheme checked
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                date = response.headers.get("Date")
        except urllib.error.HTTPError as exc:
            date = exc.headers.get("Date")
        except (urllib.error.URLError, OSError):
            yield Finding("clock", WARN, f"{url} did not answer; clock skew not checked")
            continue
        if not date:
            continue
        skew = abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time())
        status = OK if skew <= MAX_SKEW_SECONDS else FAIL
        yield Finding(
            "clock",
            status,
            f"{url}: clock differs by {skew:.0f} s"
            + ("" if status == OK else "; fix NTP (signed requests and tokens fail)"),
        )
