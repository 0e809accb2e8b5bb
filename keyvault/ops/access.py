"""Who is asking, and may they: the caller's principal and the policy checks of a session.

The principal comes from the backend the session's **store** talks to, never
from what the caller says about itself:

- ``vault://``: the token's ``lookup-self`` (entity ID, display name,
  metadata, policies) at the Vault the store uses;
- ``s3://``: STS ``GetCallerIdentity`` (for an assumed role, the role ARN and
  the session name too);
- ``file://`` (or no store): the local user, ``local_principal()``.

``--as PRINCIPAL`` (tests, demos) is honoured with the file store only, where
no backend could vouch for anybody anyway; with any other store it would be a
lie, so it is refused.

``KEYVAULT_UNSAFE_SKIP_POLICY_CHECK=1`` turns keyvault's own check off so that
tests can prove the backend alone refuses; it is **test-only**, warns loudly
on every session and leaves a ``policy-skipped`` record in the audit log.
"""

from __future__ import annotations

import contextlib
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from keyvault.config import Config
from keyvault.errors import AccessDeniedError, BackendUnavailableError, KeyvaultError, UsageError
from keyvault.names import KeyAddress
from keyvault.ops.selection import Selection
from keyvault.plugins import BackendOptions
from keyvault.policy import (
    CI_ACTIONS,
    CI_ROLES,
    Policy,
    Principal,
    aws_facts,
    claimed_principal,
    role_of,
)

if TYPE_CHECKING:
    from keyvault.audit import KeyRef
    from keyvault.plugins import SecretPrompt


class PolicySession(Protocol):
    """What the policy checks need of a session (keyvault.ops.session.Session is one)."""

    config: Config
    prompt: SecretPrompt | None
    acting_as: str | None

    def record(
        self, action: str, outcome: str, *, team: str, keys: Sequence[KeyRef] = (), detail: str = ""
    ) -> None: ...


UNSAFE_SKIP_ENV = "KEYVAULT_UNSAFE_SKIP_POLICY_CHECK"


class PolicyCheckSkippedWarning(UserWarning):
    """keyvault's own policy check is off (KEYVAULT_UNSAFE_SKIP_POLICY_CHECK): tests only."""


def skip_requested(env: Mapping[str, str]) -> bool:
    """True only for exactly ``1``; anything else set there is a mistake, and refused."""
    value = env.get(UNSAFE_SKIP_ENV)
    if value is None or value == "":
        return False
    if value != "1":
        raise UsageError(f"{UNSAFE_SKIP_ENV} must be unset or exactly 1 (tests only)")
    warnings.warn(
        PolicyCheckSkippedWarning(
            f"{UNSAFE_SKIP_ENV}=1: keyvault's OWN POLICY CHECK IS OFF; only the backends' access "
            "control protects the keys. This setting exists for tests: never set it elsewhere."
        ),
        stacklevel=2,
    )
    return True


def store_scheme(config: Config) -> str:
    store = config.store or ""
    return store.split("://", 1)[0] if "://" in store else "file"


def who_is_asking(config: Config, options: BackendOptions, claimed: str | None) -> Principal:
    """The session's principal, as its store's backend knows it (see the module docstring)."""
    scheme = store_scheme(config)
    if claimed is not None:
        if scheme != "file":
            raise UsageError(
                f"--as is honoured only with the file store: the {scheme} backend says who "
                "you are, and keyvault will not claim to be somebody else",
                hint="drop --as, or log in to the backend as that principal",
            )
        principal = claimed_principal(claimed)
        warnings.warn(
            f"acting as {principal.name} (--as, file store: nobody verified it)", stacklevel=2
        )
        return principal
    if scheme == "vault":
        return vault_principal(options)
    if scheme == "s3":
        return aws_principal(options)
    return local_principal_of()


def local_principal_of() -> Principal:
    from keyvault.ops.identity import local_principal

    label = local_principal()
    user, _, host = label.rpartition("@")
    return Principal(
        "local", f"local:{label}", {"user": user or label, "host": host or socket.gethostname()}
    )


def vault_principal(options: BackendOptions) -> Principal:
    """``lookup-self`` at the store's Vault: the token's entity, name, metadata, policies."""
    from keyvault.stores import _vault_client as vc

    client = vc.acquire(options)
    try:
        answer = client.call(
            "look up the token at",
            lambda c: c.auth.token.lookup_self(),
            path="auth/token/lookup-self",
        )
    finally:
        client.release()
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        raise BackendUnavailableError(f"Vault at {client.address}: lookup-self said nothing")
    return principal_from_lookup(data)


def principal_from_lookup(data: Mapping[str, Any]) -> Principal:
    """The facts keyvault keeps from a ``lookup-self`` answer (never the token or accessor)."""
    entity = _text(data.get("entity_id"))
    name = _text(data.get("display_name"))
    facts: dict[str, str] = {}
    if entity:
        facts["entity"] = entity
    if name:
        facts["name"] = name
    meta = data.get("meta")
    if isinstance(meta, dict):
        for key, value in meta.items():
            if isinstance(key, str) and isinstance(value, str):
                facts[f"meta:{_text(key)}"] = _text(value)
    for policy in data.get("policies") or []:
        if isinstance(policy, str):
            facts[f"policy:{_text(policy)}"] = ""
    label = f"vault:entity:{entity}" if entity else f"vault:name:{name or 'unknown'}"
    return Principal("vault", label, facts)


def aws_principal(options: BackendOptions) -> Principal:
    """STS ``GetCallerIdentity`` with the credentials the S3 store uses."""
    from keyvault.stores import _awsclient as aws

    s3 = options.for_scheme("s3")
    section = {
        k: s3[k] for k in ("profile", "region", "connect_timeout", "read_timeout") if k in s3
    }
    settings = aws.client_settings("sts", "s3", section, options.env)
    what = "ask AWS STS who the caller is (GetCallerIdentity)"
    try:
        client = aws.make_client(settings, options.env)
        answer = client.get_caller_identity()
    except KeyvaultError:
        raise
    except Exception as exc:
        translated = aws.translate_transport_error(
            exc, what=what, endpoint=settings.endpoint_url or "AWS STS"
        )
        if translated is not None:
            raise translated from None
        code, status = aws.error_code(exc)
        if code in aws.ACCESS_CODES:
            raise AccessDeniedError(f"{what}: refused ({code})") from None
        raise BackendUnavailableError(
            f"{what}: failed ({code or type(exc).__name__}, HTTP {status})"
        ) from None
    arn = _text(answer.get("Arn") if isinstance(answer, dict) else None)
    if not arn.startswith("arn:"):
        raise BackendUnavailableError(f"{what}: no caller ARN in the answer")
    return Principal("aws", f"aws:arn:{arn}", aws_facts(arn))


def precheck(
    policy: Policy, principal: Principal, action: str, team: str, selection: Selection | None
) -> AccessDeniedError | None:
    """Before any store request: refusals that need no key name (wrong team, CI asks for root)."""
    what = role_of(policy, principal, team)
    if team not in policy.teams:
        return AccessDeniedError(
            f"policy refuses {principal} to {action} keys of team "
            f"{team!r}: the team is not in the policy"
        )
    if what is None:
        return AccessDeniedError(
            f"policy refuses {principal} to {action} keys of team {team}: the principal is "
            f"neither a member nor a CI principal of team {team} (teams.{team}.members / .ci)",
            hint="act as a member of the team (log in to the backend as one), or ask the "
            "team's owners to add you",
        )
    if what == "ci" and action not in CI_ACTIONS:
        return AccessDeniedError(
            f"policy refuses {principal} to {action} keys of team {team}: CI principals may "
            f"only {'/'.join(CI_ACTIONS)} (teams.{team}.ci)"
        )
    if (
        what == "ci"
        and selection is not None
        and selection.roles
        and all(r == "root" or (r not in CI_ROLES and r == "timestamp") for r in selection.roles)
    ):
        roles = ", ".join(selection.roles)
        return AccessDeniedError(
            f"policy refuses {principal} to {action} the {roles} keys of team {team}: CI "
            f"principals never get root or timestamp keys (teams.{team}.ci)"
        )
    return None


def _text(value: object) -> str:
    """A printable, bounded string from a backend's answer (anything else: empty)."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value if c.isprintable())[:256]


class Access:
    """The policy checks of one session: the policy and the principal, each found once.

    Without a configured policy every check passes (single-user mode). Every
    refusal is recorded in the audit log before it is reported.
    """

    def __init__(self, session: PolicySession) -> None:
        self._session = session
        self._loaded = False
        self._policy: Policy | None = None
        self._principal: Principal | None = None

    def policy(self) -> Policy | None:
        if not self._loaded:
            config = self._session.config
            if config.policy is not None and skip_requested(config.env):
                self._record_skip()
            elif config.policy is not None:
                from keyvault.policy import load_policy
                from keyvault.wrappers import check_wrapper_uri

                self._policy = load_policy(config.policy, check_wrapper_uri)
            elif self._session.acting_as is not None:
                raise UsageError(
                    "--as needs a policy ([keyvault] policy or KEYVAULT_POLICY): "
                    "without one there is nothing to check"
                )
            self._loaded = True
        return self._policy

    def principal(self) -> Principal:
        if self._principal is None:
            session = self._session
            self._principal = who_is_asking(
                session.config, session.config.backend_options(session.prompt), session.acting_as
            )
        return self._principal

    def is_ci(self, team: str) -> bool:
        """True when the policy already checked names this session's principal as the
        team's CI (whose backend policies only read the store); asks nobody."""
        if self._policy is None or self._principal is None:
            return False
        return role_of(self._policy, self._principal, team) == "ci"

    def precheck(self, action: str, team: str, selection: Selection | None = None) -> None:
        """Refuse before any store request what needs no key name to refuse."""
        policy = self.policy()
        if policy is None:
            return
        refusal = precheck(policy, self.principal(), action, team, selection)
        if refusal is not None:
            self._record(action, team, [], refusal.message)
            refusal.audited = True
            raise refusal

    def refusals(
        self, action: str, addresses: Iterable[KeyAddress]
    ) -> dict[KeyAddress, AccessDeniedError]:
        """The addresses the policy refuses, each with its error; all of them recorded."""
        policy = self.policy()
        if policy is None:
            return {}
        from keyvault.policy import authorize

        principal = self.principal()
        refused: dict[KeyAddress, AccessDeniedError] = {}
        by_rule: dict[tuple[str, str], list[KeyAddress]] = {}
        for address in addresses:
            decision = authorize(policy, principal, action, address)
            if not decision.allowed:
                refused[address] = decision.error()
                by_rule.setdefault((address.team, decision.rule), []).append(address)
        for (team, rule), refused_here in by_rule.items():
            self._record(action, team, refused_here, f"policy refuses {principal}: {rule}")
        return refused

    def allowed(self, action: str, addresses: Iterable[KeyAddress]) -> list[KeyAddress]:
        """The addresses the policy allows (nothing recorded: nothing was refused)."""
        policy = self.policy()
        if policy is None:
            return list(addresses)
        from keyvault.policy import authorize

        principal = self.principal()
        return [a for a in addresses if authorize(policy, principal, action, a).allowed]

    def require(self, action: str, addresses: Iterable[KeyAddress]) -> None:
        """Raise the first refusal (after recording all of them); nothing is read before."""
        refused = self.refusals(action, addresses)
        if refused:
            first = next(iter(refused.values()))
            more = f" (and {len(refused) - 1} more keys)" if len(refused) > 1 else ""
            error = AccessDeniedError(first.message + more, hint=first.hint)
            error.audited = True
            raise error

    def _record(self, action: str, team: str, addresses: list[KeyAddress], detail: str) -> None:
        from keyvault.ops.identity import key_ref

        with contextlib.suppress(KeyvaultError):  # the refusal itself must still be reported
            self._session.record(
                action,
                "refused",
                team=team,
                keys=[key_ref(a) for a in addresses],
                detail=detail[:500],
            )

    def _record_skip(self) -> None:
        with contextlib.suppress(KeyvaultError):
            self._session.record(
                "policy",
                "skipped",
                team=self._session.config.team,
                detail=f"{UNSAFE_SKIP_ENV}=1: keyvault's own check was off",
            )


def live_vault_policies(
    options: BackendOptions, names: Iterable[str], *, prefix: str = "keyvault-"
) -> tuple[dict[str, str | None], list[str]]:
    """(name -> policy text or None when absent, other live policies named ``prefix*``).

    Read through the shared Vault client (``sys/policies/acl``): needs a token
    allowed to read those paths (an operator's, not a team member's).
    """
    from keyvault.stores import _vault_client as vc

    client = vc.acquire(options)
    try:
        found: dict[str, str | None] = {}
        for name in names:
            try:
                answer = client.call(
                    "read the ACL policy", _reader(name), path=f"sys/policies/acl/{name}"
                )
            except vc.VaultRequestError as exc:
                if exc.status != 404:
                    raise
                found[name] = None
                continue
            data = answer.get("data") if isinstance(answer, dict) else None
            text = data.get("policy") if isinstance(data, dict) else None
            found[name] = text if isinstance(text, str) else None
        listed = client.call(
            "list the ACL policies", lambda c: c.sys.list_acl_policies(), path="sys/policies/acl"
        )
    finally:
        client.release()
    data = listed.get("data") if isinstance(listed, dict) else None
    keys = data.get("keys") if isinstance(data, dict) else None
    extra = sorted(
        k for k in keys or [] if isinstance(k, str) and k.startswith(prefix) and k not in found
    )
    return found, extra


def _reader(name: str) -> Callable[[Any], Any]:
    return lambda c: c.sys.read_acl_policy(name)
