"""Recovery drills: restore through each wrapper alone, check, prove, wipe, report.

For every wrapper separately (so a disabled KMS key or a lost HSM shows up
even while another wrapper still works), the selected envelopes are opened
and restored into a throw-away directory (keyvault/scratch.py: on RAM where
there is one, marked, zeroed; one left by a SIGKILL is wiped by ``keyvault
wipe --stale`` or the next run); each restored file is read back
and compared with nothing but the envelope's own digest; where a Notary
passphrase is available the key is decrypted, its ID checked, and a fresh
challenge signed and verified against the public key the published TUF
metadata holds. The directory is wiped, and a JSON report (its SHA-256 in
the audit log) and a Markdown one are written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyvault import fsutil
from keyvault.audit import KeyRef
from keyvault.canonical import canonical_json
from keyvault.envelope import open_envelope
from keyvault.errors import IntegrityError, KeyvaultError, NotFoundError
from keyvault.keyring import Wrapper
from keyvault.names import gun_shown, role_shown
from keyvault.ops.authentic import restore_relpath
from keyvault.ops.coverage import MetadataSource, required_keys
from keyvault.ops.pacing import THROTTLED, GivenUpError, Pacer, PaceStats
from keyvault.ops.parallel import bounded_map
from keyvault.ops.restore import fetch_envelopes
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, local_principal
from keyvault.ops.stored import StoredEnvelope, list_addresses
from keyvault.redact import redact
from keyvault.scratch import private_scratch
from keyvault.trust.deep import key_label, load_private_key, verify_key_id
from keyvault.trust.model import KeyFile, Layout
from keyvault.trust.passphrases import passphrase_for
from keyvault.trust.restore import RestoreItem, apply_restore
from keyvault.trust.signing import prove_signature
from keyvault.trust.tufmeta import KeyUse
from keyvault.wrappers import check_wrapper_uri, open_wrapper

PASSED, FAILED, NOT_CHECKED = "passed", "failed", "not-checked"
#: A drill cut short by SIGINT or SIGTERM: its report holds the checks made until then.
INTERRUPTED = "interrupted"
#: A drill that failed no key but gave some up to a throttling service (--resume them).
INCOMPLETE = "incomplete"
#: The signature check of a key whose GUN has no published TUF metadata.
NOT_PUBLISHED = f"{NOT_CHECKED} (not published)"
#: The restore of a key the drill did not start: a backend was down (keyvault.breaker).
NOT_ATTEMPTED = f"{NOT_CHECKED} (not attempted: backend down)"
#: What every drill that restored a key shows.
CONTROLS = (
    "NIST SP 800-57 Part 1 (key backup and recovery)",
    "NIST SP 800-130 / 800-152 (key management system design)",
    "ISO/IEC 27001:2022 A.8.24 (use of cryptography)",
)
#: Shown only when the drilled keys are under an M-of-N group of wrappers (M >= 2).
DUAL_CONTROL = "PCI DSS 3.6 / 3.7 (key custody, dual control: M-of-N wrappers)"
#: Shown only when a teams policy decided who could read the keys.
ACCESS_CONTROL = "SOC 2 CC6 (logical access: a teams policy)"


@dataclass
class Check:
    wrapper: str
    key_id: str
    role: str | None
    gun: str | None
    sealer: str = NOT_CHECKED  # the verified sealer's fingerprint, or "unsigned"
    restore: str = NOT_CHECKED
    digest: str = NOT_CHECKED
    key_id_check: str = NOT_CHECKED
    signature: str = NOT_CHECKED
    error: str | None = None
    error_code: int | None = None
    #: SHA-256 of the stored envelope drilled: a resumed drill carries over only a check
    #: of the very envelope that is still the latest.
    envelope_sha256: str | None = None
    #: Why the key was not checked: its service kept throttling (keyvault.ops.pacing).
    throttled: str | None = None
    #: Passed in the interrupted drill this one resumed (--resume), not checked again.
    carried_over: bool = False
    #: Why the key was not started: its wrapper's backend was down by then
    #: (keyvault.breaker). Neither passed nor failed.
    not_attempted: str | None = None
    #: Every check this key needed was made (a drill interrupted midway leaves some not).
    complete: bool = field(default=False, repr=False)

    @property
    def passed(self) -> bool:
        return self.error is None and self.throttled is None and self.not_attempted is None

    @property
    def failed(self) -> bool:
        """A throttled or not attempted key is neither passed nor failed: it was not checked."""
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "wrapper": self.wrapper,
            "key_id": self.key_id,
            "role": self.role,
            "gun": self.gun,
            "sealer": self.sealer,
            "restore": self.restore,
            "digest": self.digest,
            "key_id_check": self.key_id_check,
            "signature": self.signature,
            "passed": self.passed,
            "error": self.error,
            "error_code": self.error_code,
            "envelope_sha256": self.envelope_sha256,
            "throttled": self.throttled,
            "carried_over": self.carried_over,
            "not_attempted": self.not_attempted,
        }


@dataclass
class DrillReport:
    started: str
    finished: str
    actor: str
    team: str
    store: str
    wrappers: list[str]
    selection: str
    metadata: str | None
    checks: list[Check] = field(default_factory=list)
    #: The controls this drill showed (not a fixed list: see CONTROLS and the others).
    controls: list[str] = field(default_factory=list)
    #: The signal that cut the drill short (SIGINT, SIGTERM), if one did.
    interrupted: str | None = None
    #: The error that stopped the drill before it could check every key, if one did.
    error: str | None = None
    #: How fast it went against the key services (keyvault.ops.pacing).
    pacing: PaceStats | None = None
    #: The report of the interrupted drill this one resumed: {"sha256", "started"}.
    resumed_from: dict[str, str] | None = None

    @property
    def passed(self) -> bool:
        return (
            bool(self.checks)
            and all(c.passed for c in self.checks)
            and self.interrupted is None
            and self.error is None
        )

    @property
    def status(self) -> str:
        if self.interrupted is not None:
            return INTERRUPTED
        if self.passed:
            return PASSED
        if self.error is None and self.checks and not any(c.failed for c in self.checks):
            return INCOMPLETE
        return FAILED

    @property
    def not_attempted(self) -> int:
        """Checks not started because a backend was down (keyvault.breaker)."""
        return sum(c.not_attempted is not None for c in self.checks)

    def stopped(self, why: str, *, signal: str | None = None, code: int | None = None) -> None:
        """The drill ended early (``why``): keys whose checks were under way say so."""
        self.finished = _now()
        self.interrupted = signal
        self.error = None if signal else why
        for check in self.checks:
            if check.error is None and not check.complete:
                check.error, check.error_code = f"not finished: {why}", code

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "keyvault-drill-report",
            "version": 1,
            "started": self.started,
            "finished": self.finished,
            "actor": self.actor,
            "team": self.team,
            "store": self.store,
            "wrappers": self.wrappers,
            "selection": self.selection,
            "metadata": self.metadata,
            "passed": self.passed,
            "status": self.status,
            "interrupted": self.interrupted,
            "error": self.error,
            "checks": [c.to_json() for c in self.checks],
            "not_attempted": self.not_attempted,
            "controls": self.controls,
            "pacing": self.pacing.to_json() if self.pacing else None,
            "resumed_from": (
                None
                if self.resumed_from is None
                else {**self.resumed_from, "carried_over": sum(c.carried_over for c in self.checks)}
            ),
        }


def new_report(
    session: Session,
    *,
    team: str,
    selection: Selection,
    wrappers: Sequence[str],
    metadata_label: str | None = None,
) -> DrillReport:
    """The report a drill fills in as it goes: so that one cut short still says what it
    checked (the caller writes and audits it whatever happens)."""
    selection.require_explicit("drill")
    started = _now()
    return DrillReport(
        started,
        started,
        local_principal(),
        team,
        redact(session.config.store or ""),
        [redact(uri) for uri in wrappers],
        selection.describe(),
        metadata_label,
    )


#: What identifies one check across drills: wrapper, key ID, role, GUN, envelope digest.
CheckKey = tuple[str, str, str | None, str | None, str]


def run_drill(
    session: Session,
    report: DrillReport,
    *,
    selection: Selection,
    wrappers: Sequence[str],
    source: MetadataSource | None,
    env: Mapping[str, str],
    require_published: bool = False,
    pacer: Pacer | None = None,
    carried: Mapping[CheckKey, Check] | None = None,
) -> DrillReport:
    """Drill every selected key through each wrapper, adding each check to ``report`` as
    it starts; unwraps go through ``pacer``; a check in ``carried`` (--resume) is taken
    over as it is, not made again."""
    pacer = pacer or Pacer()
    team = report.team
    stored = fetch_envelopes(session, team, selection, action="drill")  # policy-checked
    proven = _authenticated(session, stored)
    published = (
        _published(session, team, source, stored, selection, require_published)
        if source
        else Published({}, frozenset(), required=False, consulted=False)
    )
    config = session.config
    options = session.options()  # the run's breaker: a dead backend starts no new key
    for uri in wrappers:
        session.breaker.reset()  # each wrapper alone: one whose backend is down stops only itself
        try:
            wrapper = open_wrapper(uri, options)
        except KeyvaultError as exc:
            report.checks += [
                _failed(
                    Check(
                        redact(uri), s.address.key_id, s.address.role, s.address.gun, complete=True
                    ),
                    exc,
                )
                for s in stored
            ]
            continue
        try:
            with private_scratch(config.env, config.paths.state_dir, "drill") as scratch:
                _drill_one_wrapper(
                    session,
                    wrapper,
                    proven,
                    scratch.trust_dir,
                    published,
                    env,
                    report.checks,
                    carried or {},
                    pacer,
                )
        finally:
            wrapper.close()
            report.pacing = pacer.stats()
    report.finished = _now()
    report.controls = _controls(session, stored, report.checks)
    session.highwater().save()
    return report


def _controls(
    session: Session, stored: Sequence[StoredEnvelope], checks: Sequence[Check]
) -> list[str]:
    """Only what this drill showed: a restore that worked; dual control where drilled keys
    are under an M-of-N group (no single wrapper opens them, as the drill shows); access
    control where a teams policy decided who could read them."""
    shown = list(CONTROLS) if any(c.restore == PASSED for c in checks) else []
    if any((s.envelope.threshold or 0) >= 2 for s in stored):  # signed: the group is real
        shown.append(DUAL_CONTROL)
    if session.config.policy is not None:
        shown.append(ACCESS_CONTROL)
    return shown


def _authenticated(
    session: Session, stored: Sequence[StoredEnvelope]
) -> list[tuple[StoredEnvelope, KeyvaultError | None]]:
    """Each envelope with the reason it cannot be trusted, if any: a drill reports a
    forged, unsigned or rolled-back key as a failed check of that key, and goes on."""
    reader = session.reader()
    reader.prefetch([entry.address for entry in stored])
    proven: list[tuple[StoredEnvelope, KeyvaultError | None]] = []
    for entry in stored:
        try:
            proven.append((reader.check_latest(entry), None))
        except KeyvaultError as exc:
            proven.append((entry, exc))
    return proven


def _drill_one_wrapper(
    session: Session,
    wrapper: Wrapper,
    stored: Sequence[tuple[StoredEnvelope, KeyvaultError | None]],
    trust: Path,
    published: Published,
    env: Mapping[str, str],
    checks: list[Check],
    carried: Mapping[CheckKey, Check],
    pacer: Pacer,
) -> None:
    """Each key this wrapper holds, appended to ``checks`` as its checks begin; the
    unwraps run ``concurrency`` at a time, paced by ``pacer``."""
    # wrapper.uri is the form envelopes record (e.g. a pkcs11: URI without its
    # module-path or PIN), so it is what to look for and what to report.
    uri, paced = wrapper.uri, pacer.wrap(wrapper)
    todo: list[tuple[Check, StoredEnvelope]] = []
    for entry, refused in stored:
        if uri not in entry.envelope.wrapper_uris:
            continue  # this key is not wrapped by this wrapper: nothing to prove here
        a = entry.address
        prior = carried.get((uri, a.key_id, a.role, a.gun, entry.digest))
        if prior is not None and refused is None:
            checks.append(prior)  # passed before, same envelope: not unwrapped again
            continue
        check = Check(uri, a.key_id, a.role, a.gun, envelope_sha256=entry.digest or None)
        checks.append(check)
        if refused is not None:
            check.sealer = FAILED
            _failed(check, refused)
            continue
        check.sealer = entry.sealer or NOT_CHECKED
        todo.append((check, entry))

    sealers = session.sealers()  # built once, before the threads share it

    breaker = session.breaker

    def unwrap(item: tuple[Check, StoredEnvelope]) -> bytes | None:
        check, entry = item
        if breaker.is_open:  # the backend is down: not started, so neither passed nor failed
            check.restore, check.complete = NOT_ATTEMPTED, True
            check.not_attempted = breaker.skip().message
            return None
        try:
            return open_envelope(
                entry.envelope,
                [paced],
                check_wrapper_uri,
                sealers=sealers,
                allow_unsigned=session.config.allow_unsigned,
            )
        except GivenUpError as exc:  # the service kept throttling: not checked, not failed
            check.restore, check.throttled, check.complete = THROTTLED, exc.message, True
        except KeyvaultError as exc:
            _failed(check, exc)
        return None

    opened = [
        (check, entry, data)
        for (check, entry), data in zip(
            todo,
            bounded_map(unwrap, todo, session.config.concurrency, on_abort=pacer.stop),
            strict=True,
        )
        if data is not None
    ]
    items = [RestoreItem(restore_relpath(e.envelope.header), data) for _, e, data in opened]
    try:
        apply_restore(trust, items, force=False).planned.close()
    except KeyvaultError as exc:
        for check, _, _ in opened:
            _failed(check, exc)
        return
    for check, entry, _ in opened:
        check.restore = PASSED
        _verify_restored(check, entry, trust, published, env)
        check.complete = True


def _verify_restored(
    check: Check, entry: StoredEnvelope, trust: Path, published: Published, env: Mapping[str, str]
) -> None:
    header = entry.envelope.header
    data = (trust / "private" / restore_relpath(header)).read_bytes()
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), header.sha256):
        _failed(check, IntegrityError("the restored file does not match the envelope's digest"))
        check.digest = FAILED
        return
    check.digest = PASSED
    key = KeyFile(
        header.key_id,
        header.role,
        header.gun,
        header.algorithm,
        header.source_name,
        header.source_mode,
        Layout.CURRENT,
        True,
        data,
    )
    try:
        passphrase = passphrase_for(header.role, env)
        if passphrase is None:
            return  # no passphrase source: the ID and signature checks are not possible
        private = load_private_key(key, passphrase)
    except KeyvaultError as exc:
        check.key_id_check = FAILED
        _failed(check, exc)
        return  # not decrypted: nothing to sign with
    try:
        verify_key_id(key, passphrase)
        check.key_id_check = PASSED
    except KeyvaultError as exc:  # the signature still shows whether it is the published key
        check.key_id_check = FAILED
        _failed(check, exc)
    use = published.uses.get(header.key_id)
    if use is None:
        if published.consulted and (header.gun is None or header.gun in published.unpublished):
            check.signature = NOT_PUBLISHED
            if published.required:
                where = (
                    f"{header.gun} has no published TUF metadata"
                    if header.gun
                    else f"no published metadata lists {key_label(key)}"
                )
                _failed(
                    check,
                    NotFoundError(f"{where} to check the signature against (--require-published)"),
                )
        return
    try:
        prove_signature(private, use.keytype, use.public, key_label(key))
        check.signature = PASSED
    except KeyvaultError as exc:
        check.signature = FAILED
        _failed(check, exc)


@dataclass(frozen=True)
class Published:
    """What the published metadata says: the keys it relies on, and the GUNs it lacks."""

    uses: Mapping[str, KeyUse]
    unpublished: frozenset[str]
    required: bool  # --require-published: a GUN without metadata fails its keys' checks
    #: Metadata was read (not --no-metadata): a GUN-less key none of it lists is unpublished.
    consulted: bool = True


def _published(
    session: Session,
    team: str,
    source: MetadataSource,
    stored: Sequence[StoredEnvelope],
    selection: Selection,
    required: bool,
) -> Published:
    """Every GUN's published keys; a GUN with none (a restored machine has no ``tuf/``
    cache; a repository not published yet) is noted, not a reason to stop the drill.

    A root key (or a GUN-less delegation key) belongs to no GUN of its own: it is
    looked up in the drilled GUNs' metadata, then, until it is found, in that of every
    other GUN the team's store holds keys for or the metadata source knows.
    """
    guns = {s.address.gun for s in stored if s.address.gun} | {
        g for g in selection.guns if not any(c in g for c in "*?[")
    }
    found: dict[str, KeyUse] = {}
    unpublished: set[str] = set()
    for gun in sorted(guns):
        if not _read_gun(source, gun, found):
            unpublished.add(gun)
    loose = {s.address.key_id for s in stored if s.address.gun is None}
    if loose - set(found):
        others = {
            a.gun
            for a in list_addresses(session.store(), team, Selection(everything=True))
            if a.gun
        }
        for gun in sorted((others | set(source.known_guns())) - guns):
            if not loose - set(found):
                break
            _read_gun(source, gun, found)
    return Published(found, frozenset(unpublished), required)


def _read_gun(source: MetadataSource, gun: str, found: dict[str, KeyUse]) -> bool:
    """Add the keys ``gun``'s published metadata relies on; False if it has none."""
    try:
        uses = required_keys(source, gun)
    except NotFoundError:
        return False
    for use in uses:
        found.setdefault(use.key_id, use)
    return True


def _failed(check: Check, exc: KeyvaultError) -> Check:
    if check.error is None:
        check.error, check.error_code = exc.message, exc.exit_code
    return check


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_reports(report: DrillReport, directory: Path) -> tuple[Path, Path, str]:
    """report.json and report.md (0600, never overwriting); the JSON's SHA-256."""
    fsutil.ensure_private_dir(directory)
    doc = report.to_json()
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    digest = hashlib.sha256(canonical_json(doc)).hexdigest()
    fsutil.write_file_atomic(directory, "report.json", data, mode=0o600, exclusive=True)
    fsutil.write_file_atomic(
        directory, "report.md", render_markdown(report, digest).encode(), mode=0o600, exclusive=True
    )
    return directory / "report.json", directory / "report.md", digest


def render_markdown(report: DrillReport, digest: str) -> str:
    failed = [c for c in report.checks if c.failed]
    lines = [
        f"# keyvault recovery drill: {report.status.upper()}",
        "",
        *_stopped_lines(report),
        f"- Run by: {report.actor}",
        f"- Started: {report.started}; finished: {report.finished}",
        f"- Team: {report.team}; store: {report.store}",
        f"- Wrappers, each drilled alone: {', '.join(report.wrappers)}",
        f"- Keys: {report.selection}; published metadata: {report.metadata or 'not used'}",
        f"- Report SHA-256 (canonical JSON, recorded in the audit log): {digest}",
        *_pace_lines(report),
        "",
        "Each envelope's sealer signature, version chain and this machine's high-water mark "
        "were checked first; then each key was restored from the store into a throw-away "
        "directory through each wrapper, read back and compared with the envelope's digest; "
        "where a passphrase was available its key ID was checked, and where published "
        "metadata lists the key (a root key: the root.json of any GUN it signs, as a "
        "certificate) a fresh signature was verified against its public key (the "
        "columns say which checks were made for each key). The directory was then wiped.",
        "",
        "| wrapper | role | GUN | key ID | sealer | restore | digest | key ID | signature "
        "| result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.wrapper} | {role_shown(c.role)} | {gun_shown(c.role, c.gun)} | "
        f"{c.key_id[:16]} | "
        f"{_sealer_shown(c.sealer)} | {c.restore} | "
        f"{c.digest} | {c.key_id_check} | {c.signature} | "
        f"{_result(c)} |"
        for c in report.checks
    ]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [
            f"- {c.wrapper}, {role_shown(c.role)} key {c.key_id[:16]}: {c.error}" for c in failed
        ]
    not_attempted = [c for c in report.checks if c.not_attempted is not None]
    if not_attempted:
        lines += [
            "",
            f"## Not checked: {len(not_attempted)} not attempted (a backend was down; run "
            "the drill again when it is back)",
            "",
        ]
        lines += [f"- {c.wrapper}, {role_shown(c.role)} key {c.key_id[:16]}" for c in not_attempted]
    throttled = [c for c in report.checks if c.throttled is not None]
    if throttled:
        lines += ["", "## Not checked: throttled (resume the drill to check them)", ""]
        lines += [
            f"- {c.wrapper}, {role_shown(c.role)} key {c.key_id[:16]}: {c.throttled}"
            for c in throttled
        ]
    lines += [
        "",
        "## Controls evidenced",
        "",
        *([f"- {c}" for c in report.controls] or ["- none: no key was restored"]),
        "",
    ]
    return "\n".join(lines)


def _result(check: Check) -> str:
    if check.throttled is not None or check.not_attempted is not None:
        return "not checked"
    shown = "pass" if check.passed else "FAIL"
    return f"{shown} (carried over)" if check.carried_over else shown


def _pace_lines(report: DrillReport) -> list[str]:
    """The pace against the key services, and the drill this one resumed."""
    lines = []
    pace = report.pacing
    if pace is not None:
        achieved = "n/a" if pace.achieved_rate is None else f"{pace.achieved_rate:.1f}/s"
        lines.append(
            f"- Key service requests: {pace.requests} at most {pace.rate:g}/s "
            f"(achieved {achieved}); throttled {pace.throttled} time(s), "
            f"{pace.backoff_s:.1f} s of backoff, {pace.keys_throttled} key(s) "
            "given up"
        )
    if report.resumed_from is not None:
        carried = sum(c.carried_over for c in report.checks)
        lines.append(
            f"- Resumed the drill started {report.resumed_from['started']} (report "
            f"SHA-256 {report.resumed_from['sha256']}): {carried} check(s) carried "
            "over, not unwrapped again"
        )
    return lines


def _stopped_lines(report: DrillReport) -> list[str]:
    """Why a drill ended early, first thing in the report."""
    if report.interrupted is not None:
        return [
            f"**Interrupted by {report.interrupted}** after {len(report.checks)} checks: "
            "the table holds the checks made until then; keys not in it were not "
            "drilled.",
            "",
        ]
    if report.error is not None:
        return [f"**Stopped:** {report.error}", ""]
    return []


def _sealer_shown(sealer: str) -> str:
    """UNSIGNED stands out: a v1 envelope was accepted only because --allow-unsigned was given."""
    return "UNSIGNED (v1)" if sealer == "unsigned" else sealer[:23]


def audit_drill(session: Session, report: DrillReport, digest: str) -> None:
    failed = [c for c in report.checks if c.failed]
    keys = {(c.key_id, c.role, c.gun) for c in report.checks}
    outcome = "ok" if report.passed else report.status
    why = (
        f"; interrupted by {report.interrupted}"
        if report.interrupted
        else f"; stopped: {report.error}"
        if report.error
        else ""
    )
    session.record(
        "drill",
        outcome,
        team=report.team,
        keys=[KeyRef(*k) for k in sorted(keys, key=str)],
        detail=f"report sha256={digest}; {len(report.checks)} checks, "
        f"{len(failed)} failed{_unchecked(report)}; "
        f"wrappers={','.join(report.wrappers)}{why}",
        anchor=report.interrupted is None,
    )


def _unchecked(report: DrillReport) -> str:
    """For the audit record: keys given up to throttling, and checks taken over."""
    throttled = sum(c.throttled is not None for c in report.checks)
    carried = sum(c.carried_over for c in report.checks)
    return (
        (f", {throttled} not checked (throttled)" if throttled else "")
        + (f", {report.not_attempted} not attempted (backend down)" if report.not_attempted else "")
        + (f", {carried} carried over" if carried else "")
    )
