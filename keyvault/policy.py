"""Teams, principals, GUN patterns and roles: who may do what to which key.

The model is built from ``policy.toml`` (docs/teams.md is the reference)::

    version = 1
    default_team = "platform"            # optional: where keys of unclaimed GUNs go

    [teams.team-a]
    guns = ["registry.example.com/team-a/*"]
    members = ["local:alice", "vault:name:token-alice",
               "aws:arn:arn:aws:iam::111122223333:role/team-a-*"]
    ci = ["vault:meta:role=ci-team-a", "aws:arn:arn:aws:sts::111122223333:assumed-role/team-a-ci/*"]
    store = "vault://secret/keyvault"
    wrappers = ["transit://transit/team-a"]
    shared_with = []                     # teams this one may overlap (both must say so)

Members may back up, restore, fetch, rewrap, list and drill every key of
their team, root included. CI principals may fetch (restore) and list the
targets, snapshot and delegation keys of their team's GUNs: never a root
key, never a timestamp key, never a backup or a rewrap.

The rendered backend policies are the security boundary; :func:`authorize` is
a convenience and an early refusal (it trusts the identity the backend's
endpoint reports, and a caller can point keyvault at another endpoint).
The renders therefore grant CI exactly what :func:`authorize` does, and every
``aws:arn:`` rule is checked at load time for what AWS can enforce
(:func:`principal_arn_patterns`).

Errors point at the line of the offending key: :mod:`tomllib` gives line
numbers for syntax errors only, so :func:`_line_of` finds the line of a
table, key or value in the source text itself.

This is core: the standard library only. Backend policies (Vault ACL, AWS
IAM / KMS key policies) are rendered here as text and dicts; nothing here
talks to a server.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keyvault.bounded import toml_loads
from keyvault.canonical import canonical_json
from keyvault.errors import AccessDeniedError, InvalidInputError, UsageError
from keyvault.names import (
    FORMAT_PREFIX,
    MAX_GUN_LENGTH,
    NO_GUN,
    NO_GUN_SECTION,
    NO_ROLE_SECTION,
    SCOPE_CONTEXT,
    TEAM_SCOPE,
    KeyAddress,
    is_delegation_role,
    lacks_gun,
    role_shown,
    validate_fingerprint,
    validate_gun_glob,
    validate_team,
)

MAX_POLICY_SIZE = 256 * 1024
ACTIONS = ("backup", "restore", "fetch", "rewrap", "list", "drill")
#: What a CI principal may do, and to which roles (never root, never timestamp).
CI_ACTIONS = ("restore", "fetch", "list")
CI_ROLES = ("targets", "snapshot")
#: The roles CI never gets; the renders deny them at every depth and in every wrap context.
CI_DENIED_ROLES = ("root", "timestamp")
#: The most path segments a GUN can have (one-character segments and slashes).
MAX_GUN_DEPTH = (MAX_GUN_LENGTH + 1) // 2
#: Store sections CI never reads, like root/: keys whose file names no GUN or no role.
TEAM_ONLY_SECTIONS = (
    (NO_GUN_SECTION, "a key without a GUN"),
    (NO_ROLE_SECTION, "a key without a role"),
)
PRINCIPAL_KINDS = ("local", "vault", "aws")
_TOP_KEYS = {"version", "default_team", "teams"}
_TEAM_KEYS = {
    "guns",
    "members",
    "ci",
    "store",
    "wrappers",
    "shared_with",
    "description",
    "sealers",
    "revoked_sealers",
}
_VAULT_ATTRS = ("entity", "name", "meta", "policy")
_PRINCIPAL_TEXT = re.compile(r"[\x21-\x7e]{1,512}")
_META_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_MOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_TRANSIT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_AWS_PARTITION = re.compile(r"aws(?:-[a-z]+)*")
_AWS_ACCOUNT = re.compile(r"[0-9]{12}")


# -- principals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is asking, as a backend (or the local system) vouches for it.

    ``name`` is the canonical label shown in errors and audit records
    (``local:alice@host``, ``vault:entity:<id>``, ``aws:arn:<arn>``);
    ``facts`` are what rules match against, e.g. ``{"user": "alice", "host":
    "h"}``, ``{"entity": ..., "name": ..., "meta:role": ..., "policy:team-a": ""}``,
    ``{"arn": ..., "role_arn": ..., "session": ...}``. ``claimed`` is true
    for an identity nobody verified (``--as`` with the file store).
    """

    kind: str
    name: str
    facts: Mapping[str, str] = field(default_factory=dict)
    claimed: bool = False

    def __str__(self) -> str:
        return self.name + (" (claimed with --as)" if self.claimed else "")


@dataclass(frozen=True)
class PrincipalRule:
    """One entry of a team's ``members`` or ``ci`` list; see docs/teams.md for the syntax."""

    text: str
    kind: str
    attribute: str  # local: "user"; vault: entity|name|meta|policy; aws: "arn"
    pattern: str
    host: str | None = None  # local: optional host glob
    meta_key: str | None = None

    def matches(self, principal: Principal) -> bool:
        if principal.kind != self.kind:
            return False
        facts = principal.facts
        if self.kind == "local":
            user_ok = fnmatch.fnmatchcase(facts.get("user", ""), self.pattern)
            return user_ok and (
                self.host is None or fnmatch.fnmatchcase(facts.get("host", ""), self.host)
            )
        if self.kind == "aws":
            return any(
                fnmatch.fnmatchcase(facts[k], self.pattern)
                for k in ("arn", "role_arn")
                if facts.get(k)
            )
        if self.attribute == "meta":
            value = facts.get(f"meta:{self.meta_key}")
            return value is not None and fnmatch.fnmatchcase(value, self.pattern)
        if self.attribute == "policy":
            return any(
                k.startswith("policy:") and fnmatch.fnmatchcase(k[7:], self.pattern) for k in facts
            )
        value = facts.get(self.attribute)
        return bool(value) and fnmatch.fnmatchcase(value or "", self.pattern)


def parse_principal_rule(text: str) -> PrincipalRule:
    """``local:USER[@HOST]``, ``vault:entity:ID``, ``vault:name:NAME``,
    ``vault:meta:KEY=VALUE``, ``vault:policy:NAME``, ``aws:arn:ARN`` (``*``/``?`` globs
    in the last part); an ``aws:arn:`` rule only as AWS can enforce it."""
    rule = _parse_principal(text)
    if rule.kind == "aws":
        principal_arn_patterns(rule.pattern)  # refuses what AWS could not enforce as written
    return rule


def _parse_principal(text: str) -> PrincipalRule:
    if not isinstance(text, str) or not _PRINCIPAL_TEXT.fullmatch(text):
        raise UsageError(
            f"invalid principal {str(text)[:80]!r}: printable, no spaces, at most 512 characters"
        )
    kind, _, rest = text.partition(":")
    if kind == "local" and rest:
        user, at, host = rest.partition("@")
        if not user or (at and not host):
            raise UsageError(f"invalid principal {text!r}: expected local:USER or local:USER@HOST")
        return PrincipalRule(text, "local", "user", user, host or None)
    if kind == "vault":
        attribute, _, value = rest.partition(":")
        if attribute not in _VAULT_ATTRS or not value:
            raise UsageError(
                f"invalid principal {text!r}: expected vault:entity:ID, "
                "vault:name:NAME, vault:meta:KEY=VALUE or vault:policy:NAME"
            )
        if attribute == "meta":
            key, eq, meta_value = value.partition("=")
            if not eq or not _META_KEY.fullmatch(key) or not meta_value:
                raise UsageError(f"invalid principal {text!r}: expected vault:meta:KEY=VALUE")
            return PrincipalRule(text, "vault", "meta", meta_value, meta_key=key)
        return PrincipalRule(text, "vault", attribute, value)
    if kind == "aws":
        attribute, _, value = rest.partition(":")
        if attribute != "arn" or not value.startswith("arn:"):
            raise UsageError(
                f"invalid principal {text!r}: expected aws:arn:arn:aws:... "
                "(an IAM role or user ARN, or an STS assumed-role ARN)"
            )
        return PrincipalRule(text, "aws", "arn", value)
    raise UsageError(
        f"invalid principal {text[:80]!r}: it must start with "
        f"{', '.join(k + ':' for k in PRINCIPAL_KINDS)}"
    )


def claimed_principal(text: str) -> Principal:
    """The principal ``--as`` names: the same syntax as the rules, without globs."""
    rule = _parse_principal(text)
    if any(c in text for c in "*?["):
        raise UsageError(f"--as {text!r}: name one principal, without wildcards")
    if rule.kind == "local":
        facts = {"user": rule.pattern, "host": rule.host or ""}
    elif rule.kind == "aws":
        facts = aws_facts(rule.pattern)
    elif rule.attribute == "meta":
        facts = {f"meta:{rule.meta_key}": rule.pattern}
    elif rule.attribute == "policy":
        facts = {f"policy:{rule.pattern}": ""}
    else:
        facts = {rule.attribute: rule.pattern}
    return Principal(rule.kind, text, facts, claimed=True)


def principal_arn_patterns(arn: str) -> tuple[str, ...]:
    """What AWS's ``aws:PrincipalArn`` must match (ArnLike) for an ``aws:arn:`` rule.

    The partition and the account must be written out: a wildcard account
    would admit a role of that name in every AWS account. For a role session
    AWS puts the role's IAM ARN, path included, in ``aws:PrincipalArn``, never
    the STS ``assumed-role`` ARN keyvault sees; so ``assumed-role/ROLE/*``
    and ``role/ROLE`` become ``role/ROLE`` and ``role/*/ROLE``. A session
    name cannot be enforced (whoever may assume the role picks it), and a
    role path never reaches keyvault (STS omits it): both are refused.
    """
    parts = arn.split(":", 5)
    if len(parts) != 6:
        raise UsageError(
            f"invalid AWS ARN {arn[:80]!r}: expected arn:PARTITION:SERVICE::ACCOUNT:RESOURCE"
        )
    _, partition, service, region, account, resource = parts
    if not _AWS_PARTITION.fullmatch(partition):
        raise UsageError(
            f"AWS ARN {arn[:80]!r}: write the partition out (aws, aws-cn, "
            "aws-us-gov), without wildcards"
        )
    if not _AWS_ACCOUNT.fullmatch(account):
        raise UsageError(
            f"AWS ARN {arn[:80]!r}: the account must be a 12-digit account ID, "
            "without wildcards: a wildcard account admits a role of that name "
            "in every AWS account"
        )
    role: str | None = None
    if resource.startswith("assumed-role/"):
        rest = resource.removeprefix("assumed-role/")
        role, slash, session = rest.rpartition("/")
        if not slash and rest.endswith("*"):
            role, session = rest, "*"
        if session != "*" or not role or "/" in role:
            raise UsageError(
                f"AWS ARN {arn[:80]!r}: AWS policies match the role of a session "
                "(aws:PrincipalArn), never its session name, which whoever assumes the role "
                "chooses; write ...:assumed-role/ROLE/* or arn:aws:iam::ACCOUNT:role/ROLE"
            )
        service = "iam"
    elif resource.startswith("role/"):
        role = resource.removeprefix("role/")
        if "/" in role:
            raise UsageError(
                f"AWS ARN {arn[:80]!r}: write the role without its path; STS names a role "
                "session without it, so keyvault could never match it (the rendered AWS "
                "policies accept the role under any path)"
            )
    if role is None:
        return (arn,)
    base = f"arn:{partition}:{service}:{region}:{account}:role/"
    return tuple(dict.fromkeys((base + role, f"{base}*/{role}")))


def aws_facts(arn: str) -> dict[str, str]:
    """An STS caller ARN, and for an assumed role the role's IAM ARN and the session name."""
    facts = {"arn": arn}
    match = re.fullmatch(r"arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/(.+)/([^/]+)", arn)
    if match:
        partition, account, role, session = match.groups()
        facts["role_arn"] = f"arn:{partition}:iam::{account}:role/{role}"
        facts["session"] = session
    return facts


# -- GUN pattern overlap --------------------------------------------------------------------


def glob_intersection(a: str, b: str) -> str | None:
    """A string both ``*``/``?`` globs match (fnmatchcase semantics), or None if none exists.

    A breadth-first search over pairs of positions (i, j): ``*`` may match
    nothing (move on) or one more character (stay); a character both sides
    accept moves both on. The witness is built from the path taken, so a
    caller can show it (and tests can check it with :func:`fnmatch.fnmatchcase`).
    States: (len(a)+1) * (len(b)+1), each visited once.
    """
    for pattern in (a, b):
        if "[" in pattern:
            raise UsageError(f"GUN pattern {pattern!r}: only * and ? wildcards are supported")
    start, goal = (0, 0), (len(a), len(b))
    parent: dict[tuple[int, int], tuple[tuple[int, int], str]] = {start: (start, "")}
    queue = deque([start])
    while queue:
        i, j = queue.popleft()
        if (i, j) == goal:
            out: list[str] = []
            node = goal
            while node != start:
                node, char = parent[node]
                out.append(char)
            return "".join(reversed(out))
        for step, char in _moves(a, b, i, j):
            if step not in parent:
                parent[step] = ((i, j), char)
                queue.append(step)
    return None


def _moves(a: str, b: str, i: int, j: int) -> Iterable[tuple[tuple[int, int], str]]:
    x = a[i] if i < len(a) else None
    y = b[j] if j < len(b) else None
    if x == "*":
        yield (i + 1, j), ""
    if y == "*":
        yield (i, j + 1), ""
    if x is None or y is None:
        return
    if x == "*" and y == "*":
        return  # both stay: no progress (skipping either star covers it)
    if x == "*":
        yield (i, j + 1), ("a" if y == "?" else y)
    elif y == "*":
        yield (i + 1, j), ("a" if x == "?" else x)
    elif x == "?" or y == "?" or x == y:
        yield (i + 1, j + 1), ("a" if x == "?" and y == "?" else y if x == "?" else x)


# -- the model --------------------------------------------------------------------------


@dataclass(frozen=True)
class Team:
    name: str
    guns: tuple[str, ...]
    members: tuple[PrincipalRule, ...]
    ci: tuple[PrincipalRule, ...]
    store: str | None = None
    wrappers: tuple[str, ...] = ()
    shared_with: tuple[str, ...] = ()
    description: str = ""
    #: Fingerprints of the sealers whose envelopes the team's members and CI accept,
    #: and of those refused even where pinned elsewhere (docs/envelope.md).
    sealers: tuple[str, ...] = ()
    revoked_sealers: tuple[str, ...] = ()

    def owns(self, gun: str) -> bool:
        return any(fnmatch.fnmatchcase(gun, p) for p in self.guns)


@dataclass(frozen=True)
class Policy:
    teams: Mapping[str, Team]
    default_team: str | None = None
    source: Path | None = None

    def team(self, name: str) -> Team:
        try:
            return self.teams[name]
        except KeyError:
            raise AccessDeniedError(
                f"team {name!r} is not in the policy{_from(self.source)}",
                hint=f"teams: {', '.join(sorted(self.teams)) or 'none'}",
            ) from None


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`authorize`: allowed or not, and the rule that decided."""

    allowed: bool
    principal: Principal
    action: str
    address: KeyAddress
    rule: str

    def describe_key(self) -> str:
        a = self.address
        where = f" of GUN {a.gun}" if a.gun else (f" {NO_GUN}" if lacks_gun(a.role, a.gun) else "")
        return f"the {role_shown(a.role)} key {a.key_id[:16]}{where} (team {a.team})"

    def error(self) -> AccessDeniedError:
        return AccessDeniedError(
            f"policy refuses {self.principal} to {self.action} {self.describe_key()}: {self.rule}",
            hint="ask the team's owners to change policy.toml, or act as a member of the team",
        )


def team_for_gun(policy: Policy, gun: str) -> str:
    """The team that owns ``gun`` (its patterns), else the default team, else refused.

    A GUN two teams declared as shared belongs to both: the caller must say
    which team it acts as (``--team``).
    """
    owners = teams_for_gun(policy, gun)
    if len(owners) == 1:
        return owners[0]
    if owners:
        raise UsageError(
            f"GUN {gun} is shared by teams {', '.join(owners)}",
            hint="say which team you act as with --team",
        )
    raise AccessDeniedError(
        f"GUN {gun} matches no team's patterns in the policy{_from(policy.source)}, and no "
        "default_team is declared",
        hint="add a pattern for it to a team's guns, or declare default_team",
    )


def teams_for_gun(policy: Policy, gun: str) -> tuple[str, ...]:
    owners = tuple(sorted(t.name for t in policy.teams.values() if t.owns(gun)))
    if owners:
        return owners
    return (policy.default_team,) if policy.default_team is not None else ()


def authorize(policy: Policy, principal: Principal, action: str, address: KeyAddress) -> Decision:
    """May ``principal`` perform ``action`` on the key at ``address``? Never raises for a 'no'."""
    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")

    def no(rule: str) -> Decision:
        return Decision(False, principal, action, address, rule)

    team = policy.teams.get(address.team)
    if team is None:
        return no(f"team {address.team!r} is not in the policy{_from(policy.source)}")
    if address.gun is not None:
        owners = teams_for_gun(policy, address.gun)
        if not owners:
            return no(
                f"GUN {address.gun} matches no team's patterns and no default_team is declared"
            )
        if team.name not in owners:
            return no(
                f"GUN {address.gun} belongs to team {', '.join(owners)}, not "
                f"{team.name} (teams.{owners[0]}.guns)"
            )
    member = next((r for r in team.members if r.matches(principal)), None)
    if member is not None:
        return Decision(
            True, principal, action, address, f"teams.{team.name}.members {member.text!r}"
        )
    ci = next((r for r in team.ci if r.matches(principal)), None)
    if ci is None:
        return no(
            f"{principal.name} is neither a member nor a CI principal of team "
            f"{team.name} (teams.{team.name}.members / .ci)"
        )
    if address.role == "root":
        return no(f"CI principals never get root keys (matched teams.{team.name}.ci {ci.text!r})")
    if address.team_only:
        return no(
            "CI principals never get a key whose file names no "
            f"{'role' if address.role is None else 'GUN'}: like a root key, it belongs "
            f"to the team's members (matched teams.{team.name}.ci {ci.text!r})"
        )
    if action not in CI_ACTIONS:
        return no(
            f"CI principals may only {'/'.join(CI_ACTIONS)}, never {action} (matched "
            f"teams.{team.name}.ci {ci.text!r})"
        )
    if address.role not in CI_ROLES and not is_delegation_role(address.role):
        return no(
            f"CI principals may fetch targets, snapshot and delegation keys, not "
            f"{address.role} keys (matched teams.{team.name}.ci {ci.text!r})"
        )
    return Decision(True, principal, action, address, f"teams.{team.name}.ci {ci.text!r}")


def role_of(policy: Policy, principal: Principal, team: str) -> str | None:
    """``member``, ``ci`` or None: what the principal is to the team."""
    t = policy.teams.get(team)
    if t is None:
        return None
    if any(r.matches(principal) for r in t.members):
        return "member"
    if any(r.matches(principal) for r in t.ci):
        return "ci"
    return None


def _from(source: Path | None) -> str:
    return f" ({source})" if source else ""


# -- loading --------------------------------------------------------------------------------


def load_policy(path: Path, check_wrapper: Callable[[str], None] | None = None) -> Policy:
    from keyvault.fsutil import read_small_text

    text = read_small_text(
        path, "policy file", MAX_POLICY_SIZE, "fix [keyvault] policy or KEYVAULT_POLICY"
    )
    return parse_policy(text, path, check_wrapper)


def parse_policy(
    text: str, source: Path | None = None, check_wrapper: Callable[[str], None] | None = None
) -> Policy:
    """Build and check the model; every error names the file and the line.

    ``check_wrapper`` raises UsageError for a wrapper URI keyvault cannot use
    (the wrappers layer passes its own check; the core knows no schemes).
    """
    where = str(source) if source else "policy"
    try:
        doc = toml_loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{where}: TOML syntax error: {exc}") from None

    def fail(
        message: str, table: str = "", key: str | None = None, value: str | None = None
    ) -> InvalidInputError:
        line = _line_of(text, table, key, value)
        at = f"{where}:{line}" if line else where
        return InvalidInputError(f"{at}: {message}")

    for key in doc:
        if key not in _TOP_KEYS:
            raise fail(f"unknown key {key[:40]!r}", "", key)
    if doc.get("version", 1) != 1:
        raise fail("unsupported policy version (expected 1)", "", "version")
    teams_doc = doc.get("teams", {})
    if not isinstance(teams_doc, dict) or not teams_doc:
        raise fail("declare at least one team ([teams.<name>])", "", "teams")
    teams: dict[str, Team] = {}
    for name, body in teams_doc.items():
        table = f"teams.{name}"
        try:
            validate_team(name)
        except UsageError as exc:
            raise fail(exc.message, table) from None
        if not isinstance(body, dict):
            raise fail(f"teams.{name} must be a table", "teams", name)
        teams[name] = _team(
            name, body, lambda m, k=None, v=None, t=table: fail(m, t, k, v), check_wrapper
        )
    default = doc.get("default_team")
    if default is not None and default not in teams:
        raise fail(f"default_team {str(default)[:40]!r} is not a declared team", "", "default_team")
    _check_shared(teams, fail)
    _check_overlaps(teams, fail)
    return Policy(teams, default, source)


def _team(
    name: str,
    body: Mapping[str, Any],
    fail: Any,
    check_wrapper: Callable[[str], None] | None = None,
) -> Team:
    for key in body:
        if key not in _TEAM_KEYS:
            raise fail(f"unknown key {key[:40]!r} in [teams.{name}]", key)

    def strings(key: str) -> list[str]:
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"teams.{name}.{key} must be a list of strings", key)
        return value

    guns = strings("guns")
    for pattern in guns:
        try:
            validate_gun_glob(pattern)
            if "[" in pattern:
                raise UsageError("only * and ? wildcards are supported")
        except UsageError as exc:
            raise fail(f"teams.{name}.guns: {exc.message}", "guns", pattern) from None
    rules: dict[str, list[PrincipalRule]] = {"members": [], "ci": []}
    for key, found in rules.items():
        for text in strings(key):
            try:
                found.append(parse_principal_rule(text))
            except UsageError as exc:
                raise fail(f"teams.{name}.{key}: {exc.message}", key, text) from None
    store = body.get("store")
    if store is not None and (not isinstance(store, str) or "://" not in store):
        raise fail(f"teams.{name}.store must be a store URI", "store")
    wrappers = strings("wrappers")
    for uri in wrappers:
        try:
            if check_wrapper is not None:
                check_wrapper(uri)
        except UsageError as exc:
            raise fail(f"teams.{name}.wrappers: {exc.message}", "wrappers", uri) from None
    shared = strings("shared_with")
    for other in shared:
        try:
            validate_team(other)
        except UsageError as exc:
            raise fail(exc.message, "shared_with", other) from None
    description = body.get("description", "")
    if not isinstance(description, str):
        raise fail(f"teams.{name}.description must be a string", "description")
    pins: dict[str, tuple[str, ...]] = {}
    for key in ("sealers", "revoked_sealers"):
        try:
            pins[key] = tuple(validate_fingerprint(f) for f in strings(key))
        except UsageError as exc:
            raise fail(f"teams.{name}.{key}: {exc.message}", key) from None
    return Team(
        name,
        tuple(guns),
        tuple(rules["members"]),
        tuple(rules["ci"]),
        store,
        tuple(wrappers),
        tuple(shared),
        description,
        pins["sealers"],
        pins["revoked_sealers"],
    )


def _check_shared(teams: Mapping[str, Team], fail: Any) -> None:
    for team in teams.values():
        for other in team.shared_with:
            if other not in teams or other == team.name:
                raise fail(
                    f"teams.{team.name}.shared_with names {other!r}, which is not "
                    "another declared team",
                    f"teams.{team.name}",
                    "shared_with",
                    other,
                )


def _check_overlaps(teams: Mapping[str, Team], fail: Any) -> None:
    """No GUN may belong to two teams, unless both declare the other in ``shared_with``."""
    ordered = list(teams.values())
    for n, a in enumerate(ordered):
        for b in ordered[n + 1 :]:
            if b.name in a.shared_with and a.name in b.shared_with:
                continue
            for pa in a.guns:
                for pb in b.guns:
                    witness = glob_intersection(pa, pb)
                    if witness is not None:
                        raise fail(
                            f"GUN pattern {pb!r} of team {b.name} overlaps {pa!r} of team "
                            f"{a.name} (both match {witness!r}); make them disjoint, or list "
                            "each team in the other's shared_with",
                            f"teams.{b.name}",
                            "guns",
                            pb,
                        )


def _line_of(text: str, table: str, key: str | None, value: str | None) -> int | None:
    """The 1-based line of ``value`` (or ``key``, or the table header) in the source.

    Understands ``[a.b]`` headers (bare or quoted parts), ``key = ...`` lines
    and values on the following lines of a multi-line array. Falls back to
    the table's header, then None.
    """
    lines = text.splitlines()
    current = ""
    header_line: int | None = None
    key_line: int | None = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\](?:\s*#.*)?", stripped)
        if header:
            if key_line is not None:
                break  # the key's table ended without the value
            current = ".".join(p.strip().strip('"').strip("'") for p in header.group(1).split("."))
            if current == table:
                header_line = number
            continue
        if current != table:
            continue
        if key_line is None and key is not None:
            match = re.match(r"\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)\s*=", line)
            if match and match.group(1).strip("\"'") == key:
                key_line = number
                if value is None:
                    return number
        if (
            key_line is not None
            and value is not None
            and (json.dumps(value) in line or f"'{value}'" in line)
        ):
            return number
    if key_line is not None:
        return key_line
    return header_line if key is None or header_line else None


# -- rendering backend policies ---------------------------------------------------------------


def vault_policy_name(team: str, kind: str) -> str:
    return f"keyvault-{team}-{kind}"


def _vault_store(team: Team) -> tuple[str, str] | None:
    """(mount, prefix with a trailing slash or "") of the team's vault:// store."""
    if not team.store or not team.store.startswith("vault://"):
        return None
    parts = urlsplit(team.store)
    mount = parts.netloc
    prefix = parts.path.strip("/")
    segments = prefix.split("/") if prefix else []
    if not _MOUNT.fullmatch(mount) or not all(_PREFIX_SEGMENT.fullmatch(s) for s in segments):
        raise UsageError(f"teams.{team.name}.store {team.store!r} is not a valid vault:// URI")
    return mount, (prefix + "/" if prefix else "")


def _transit_keys(team: Team) -> list[tuple[str, str]]:
    keys = []
    for uri in team.wrappers:
        if uri.startswith("transit://"):
            parts = urlsplit(uri)
            key = parts.path.strip("/")
            if not _MOUNT.fullmatch(parts.netloc) or not _TRANSIT_KEY.fullmatch(key):
                raise UsageError(
                    f"teams.{team.name}.wrappers: {uri!r} is not a valid transit:// URI"
                )
            keys.append((parts.netloc, key))
    return keys


def render_vault(policy: Policy) -> dict[str, str]:
    """One ACL policy per team and kind: ``keyvault-<team>-member`` and ``-ci`` (HCL text)."""
    out: dict[str, str] = {}
    for team in sorted(policy.teams.values(), key=lambda t: t.name):
        store = _vault_store(team)
        transit = _transit_keys(team)
        if store is None and not transit:
            continue
        out[vault_policy_name(team.name, "member")] = _vault_member(team, store, transit)
        out[vault_policy_name(team.name, "ci")] = _vault_ci(team, store, transit)
    return out


def _hcl(
    path: str,
    capabilities: Sequence[str],
    comment: str = "",
    *,
    allowed: Mapping[str, Sequence[str]] | None = None,
    denied: Mapping[str, Sequence[str]] | None = None,
) -> str:
    caps = ", ".join(json.dumps(c) for c in capabilities)
    lead = f"# {comment}\n" if comment else ""
    body = f"  capabilities = [{caps}]\n"
    for name, params in (("allowed_parameters", allowed), ("denied_parameters", denied)):
        if params is not None:
            lines = "".join(
                f"    {json.dumps(k)} = [{', '.join(json.dumps(v) for v in vs)}]\n"
                for k, vs in params.items()
            )
            body += f"  {name} = {{\n{lines}  }}\n"
    return f'{lead}path "{path}" {{\n{body}}}\n'


def _hcl_line(path: str, capabilities: Sequence[str]) -> str:
    return f'path "{path}" {{ capabilities = [{", ".join(json.dumps(c) for c in capabilities)}] }}'


def _vault_member(
    team: Team, store: tuple[str, str] | None, transit: Sequence[tuple[str, str]]
) -> str:
    blocks = [
        f"# keyvault: members of team {team.name} (rendered by 'keyvault policy render')"
        "\n# Every key of the team, root included: back up, restore, rewrap, list.\n"
    ]
    if store is not None:
        mount, prefix = store
        base = f"{prefix}{FORMAT_PREFIX}/teams/{team.name}"
        blocks.append(
            _hcl(
                f"{mount}/data/{base}/*",
                ["create", "read", "update"],
                "envelopes (create-only and compare-and-set writes, reads)",
            )
        )
        blocks.append(
            _hcl(
                f"{mount}/metadata/{base}/*",
                ["create", "read", "update", "list"],
                "versions, labels and listing below the team's prefix; a write may "
                "set only the labels\n# (custom_metadata): never max_versions or "
                "delete_version_after, which would erase history",
                allowed={"custom_metadata": []},
            )
        )
        blocks.append(_hcl(f"{mount}/metadata/{base}", ["list"]))
        blocks.append(
            _hcl(
                f"{mount}/detailed-metadata/{base}/*",
                ["list"],
                "each folder's latest versions in one LIST: an unchanged backup reads no key "
                "(without it,\n# each key is read)",
            )
        )
    for mount, key in transit:
        blocks.append(_hcl(f"{mount}/encrypt/{key}", ["update"], f"Transit key {key}"))
        blocks.append(_hcl(f"{mount}/decrypt/{key}", ["update"]))
        blocks.append(_hcl(f"{mount}/rewrap/{key}", ["update"]))
        blocks.append(_hcl(f"{mount}/keys/{key}", ["read"]))
    return "\n".join(blocks)


def _vault_ci(team: Team, store: tuple[str, str] | None, transit: Sequence[tuple[str, str]]) -> str:
    blocks = [
        f"# keyvault: CI principals of team {team.name} (rendered by 'keyvault policy "
        "render')\n# Read-only: the team's GUN and delegation keys; never a root or "
        "timestamp key, never a write.\n"
    ]
    if store is not None:
        mount, prefix = store
        base = f"{prefix}{FORMAT_PREFIX}/teams/{team.name}"
        for section in ("guns", "delegations"):
            blocks.append(
                _hcl(f"{mount}/data/{base}/{section}/*", ["read"], f"{section} envelopes")
            )
            blocks.append(_hcl(f"{mount}/metadata/{base}/{section}/*", ["read", "list"]))
        for section, what in (("root", "the root path"), *TEAM_ONLY_SECTIONS):
            blocks.append(_hcl(f"{mount}/data/{base}/{section}/*", ["deny"], f"never {what}"))
            blocks.append(_hcl(f"{mount}/metadata/{base}/{section}/*", ["deny"]))
        blocks.append(_vault_ci_denials(mount, base))
    for mount, key in transit:
        blocks.append(
            _hcl(
                f"{mount}/decrypt/{key}",
                ["update"],
                f"Transit key {key}: decrypt only, one context at a time (no "
                "batch_input), never\n# a root or timestamp context (base64 "
                "without line breaks, which Transit would skip)",
                allowed={"ciphertext": [], "context": []},
                denied={"context": transit_context_denials(team.name)},
            )
        )
    return "\n".join(blocks)


def _vault_ci_denials(mount: str, base: str) -> str:
    """Root and timestamp objects at every GUN depth (and under delegations/).

    Vault globs cannot anchor a role from the end of a path, so each depth
    gets its own ``+`` pattern. An exact pattern outranks the ``guns/*``
    grant (Vault's priority rules), and ``+`` also matches the empty last
    segment of a listing: the metadata patterns keep ``list``, so keyvault
    can still walk a GUN (key IDs are public in the TUF root), and refuse
    everything else.
    """
    lines = ["# root and timestamp objects at every depth: no data, no metadata (list only)"]
    for role in CI_DENIED_ROLES:
        for depth in range(MAX_GUN_DEPTH + 1):
            section = "guns/" + "+/" * depth if depth else "delegations/"
            lines.append(_hcl_line(f"{mount}/data/{base}/{section}{role}/+", ["deny"]))
            lines.append(_hcl_line(f"{mount}/metadata/{base}/{section}{role}/+", ["list"]))
    return "\n".join(lines) + "\n"


def transit_context_denials(team: str) -> list[str]:
    """``denied_parameters`` values that refuse a root, timestamp or team-only Transit context.

    The context is ``base64(canonical_json(envelope context))``; the role is
    followed by the team, so ``,"keyvault:role":"R","keyvault:team":"T"``
    appears in every such context, and ``,"keyvault:scope":"team","keyvault:team":"T"``
    in that of every key without a GUN or a role (names.SCOPE_CONTEXT, which
    sorts between role and team). Its base64 depends on where it starts
    modulo 3: one ``*...*`` (contains) pattern per alignment, made of whole
    4-character groups only. Transit's decoder skips line breaks, which could
    split a group: contexts holding one are refused too.
    """
    out = ["*\n*", "*\r*"]
    members = [{"keyvault:role": role} for role in CI_DENIED_ROLES]
    for member in [*members, {SCOPE_CONTEXT: TEAM_SCOPE}]:
        core = b"," + canonical_json({**member, "keyvault:team": team})[1:-1]
        for skip in range(3):
            part = core[skip:]
            out.append("*" + base64.b64encode(part[: len(part) // 3 * 3]).decode("ascii") + "*")
    return out


def render_aws(policy: Policy) -> dict[str, dict[str, Any]]:
    """Per team: IAM policy documents for members and CI, and KMS key policy statements."""
    out: dict[str, dict[str, Any]] = {}
    for team in sorted(policy.teams.values(), key=lambda t: t.name):
        s3 = _s3_store(team)
        kms = [uri for uri in team.wrappers if uri.startswith("awskms://")]
        if s3 is None and not kms:
            continue
        out[f"keyvault-{team.name}-member"] = _aws_doc(_aws_member(team, s3, kms))
        out[f"keyvault-{team.name}-ci"] = _aws_doc(_aws_ci(team, s3, kms))
        if kms:
            out[f"keyvault-{team.name}-kms-key-policy"] = {
                "Comment": f"Statements to add to the key policy of each KMS key of team "
                f"{team.name} (keyvault policy render)",
                "Statement": _kms_key_statements(team),
            }
    return out


def _aws_doc(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": statements}


def _s3_store(team: Team) -> tuple[str, str] | None:
    if not team.store or not team.store.startswith("s3://"):
        return None
    parts = urlsplit(team.store)
    prefix = parts.path.strip("/")
    if not _S3_BUCKET.fullmatch(parts.netloc) or not all(
        _PREFIX_SEGMENT.fullmatch(s) for s in (prefix.split("/") if prefix else [])
    ):
        raise UsageError(f"teams.{team.name}.store {team.store!r} is not a valid s3:// URI")
    return parts.netloc, (prefix + "/" if prefix else "")


def _kms_resources(kms: Sequence[str]) -> tuple[list[str], list[str]]:
    """(key ARNs, alias names) of awskms:// URIs."""
    arns, aliases = [], []
    for uri in kms:
        target = urlsplit(uri).path.lstrip("/")
        if target.startswith("arn:") and ":key/" in target:
            arns.append(target)
        elif target.startswith("arn:") and ":alias/" in target:
            aliases.append(target.split(":", 5)[5])
        elif target.startswith("alias/"):
            aliases.append(target)
        else:
            arns.append(target)  # a bare key ID: only valid with the account's ARN prefix
    return sorted(arns), sorted(aliases)


def _kms_statement(
    sid: str,
    team: str,
    actions: list[str],
    kms: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    arns, aliases = _kms_resources(kms)
    condition: dict[str, Any] = {
        "StringEquals": {"kms:EncryptionContext:keyvault:team": team},
        **(extra or {}),
    }
    statements = []
    if arns:
        statements.append(
            {
                "Sid": sid,
                "Effect": "Allow",
                "Action": actions,
                "Resource": arns,
                "Condition": condition,
            }
        )
    if aliases:
        statements.append(
            {
                "Sid": sid + "ByAlias",
                "Effect": "Allow",
                "Action": actions,
                "Resource": "*",
                "Condition": {
                    **condition,
                    "ForAnyValue:StringEquals": {"kms:ResourceAliases": aliases},
                },
            }
        )
    return statements


#: CI's KMS grants: only a context whose role is present and not root or timestamp, and
#: that has no team scope (a key without a GUN or a role), so such an envelope copied
#: where CI can read it still does not unwrap.
_KMS_SCOPE = f"kms:EncryptionContext:{SCOPE_CONTEXT}"
_KMS_CI_ROLE = {
    "StringNotEquals": {"kms:EncryptionContext:keyvault:role": list(CI_DENIED_ROLES)},
    "Null": {"kms:EncryptionContext:keyvault:role": "false", _KMS_SCOPE: "true"},
}
#: S3 object names of root and timestamp keys at any depth below the team's prefix
#: (``*`` spans slashes, ``?`` is one character: a 64-hex key ID and ``.json``).
_S3_DENIED = [f"*/{role}/{'?' * 64}.json" for role in CI_DENIED_ROLES]


_KMS_MEMBER = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:ReEncrypt*",
    "kms:DescribeKey",
]


def _sid(team: str) -> str:
    return "".join(p.capitalize() for p in team.split("-"))


def _aws_member(team: Team, s3: tuple[str, str] | None, kms: Sequence[str]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    sid = f"Keyvault{_sid(team.name)}Member"
    if s3 is not None:
        bucket, prefix = s3
        base = f"{prefix}{FORMAT_PREFIX}/teams/{team.name}/"
        statements.append(
            {
                "Sid": sid + "Objects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{base}*",
            }
        )
        statements.append(
            {
                "Sid": sid + "List",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [base, f"{base}*"]}},
            }
        )
        statements.append(
            {
                "Sid": sid + "Bucket",
                "Effect": "Allow",
                "Action": ["s3:GetBucketVersioning"],
                "Resource": f"arn:aws:s3:::{bucket}",
            }
        )
    statements += _kms_statement(sid + "Kms", team.name, _KMS_MEMBER, kms)
    return statements


def _aws_ci(team: Team, s3: tuple[str, str] | None, kms: Sequence[str]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    sid = f"Keyvault{_sid(team.name)}Ci"
    if s3 is not None:
        bucket, prefix = s3
        base = f"{prefix}{FORMAT_PREFIX}/teams/{team.name}/"
        readable = [f"{base}guns/", f"{base}delegations/"]
        statements.append(
            {
                "Sid": sid + "Objects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": [f"arn:aws:s3:::{bucket}/{p}*" for p in readable],
            }
        )
        statements.append(
            {
                "Sid": sid + "List",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {
                    "StringLike": {"s3:prefix": [*readable, *[p + "*" for p in readable]]}
                },
            }
        )
        statements.append(
            {
                "Sid": sid + "NeverRoot",
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": f"arn:aws:s3:::{bucket}/{base}root/*",
            }
        )
        statements.append(
            {
                "Sid": sid + "NeverTeamOnly",
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}/{base}{s}/*" for s, _ in TEAM_ONLY_SECTIONS],
            }
        )
        statements.append(
            {
                "Sid": sid + "NeverRootOrTimestamp",
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}/{base}{p}" for p in _S3_DENIED],
            }
        )
    statements += _kms_statement(sid + "Kms", team.name, ["kms:Decrypt"], kms, _KMS_CI_ROLE)
    if kms:
        statements.append(
            {
                "Sid": sid + "KmsNeverRootOrTimestamp",
                "Effect": "Deny",
                "Action": "kms:*",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:EncryptionContext:keyvault:role": list(CI_DENIED_ROLES)}
                },
            }
        )
        statements.append(
            {
                "Sid": sid + "KmsNeverTeamOnly",
                "Effect": "Deny",
                "Action": "kms:*",
                "Resource": "*",
                "Condition": {"StringEquals": {_KMS_SCOPE: TEAM_SCOPE}},
            }
        )
    return statements


def _kms_key_statements(team: Team) -> list[dict[str, Any]]:
    """Key policy statements: members and CI matched by ``aws:PrincipalArn`` (ArnLike) and
    ``aws:PrincipalAccount``; what AWS evaluates (:func:`principal_arn_patterns`)."""
    statements = []
    for kind, rules, actions, extra in (
        ("Members", team.members, _KMS_MEMBER, {}),
        ("Ci", team.ci, ["kms:Decrypt"], _KMS_CI_ROLE),
    ):
        patterns = [r.pattern for r in rules if r.kind == "aws"]
        if not patterns:
            continue
        arns = sorted({a for p in patterns for a in principal_arn_patterns(p)})
        accounts = sorted({p.split(":")[4] for p in patterns})
        statements.append(
            {
                "Sid": f"Keyvault{_sid(team.name)}{kind}",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": actions,
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:EncryptionContext:keyvault:team": team.name,
                        "aws:PrincipalAccount": accounts,
                    },
                    "ArnLike": {"aws:PrincipalArn": arns},
                    **extra,
                },
            }
        )
    return statements


def render_files(policy: Policy, target: str) -> dict[str, str]:
    """File name -> content, as ``keyvault policy render --out DIR`` writes them."""
    if target == "vault":
        return {f"{name}.hcl": text for name, text in render_vault(policy).items()}
    if target == "aws":
        return {
            f"{name}.json": json.dumps(doc, indent=2, sort_keys=True) + "\n"
            for name, doc in render_aws(policy).items()
        }
    raise UsageError(f"unknown target {target!r}: expected vault or aws")


def normalize_hcl(text: str) -> str:
    """For drift checks: comments, blank lines and surrounding spaces do not count."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return "\n".join(re.sub(r"\s+", " ", line) for line in lines if line)
