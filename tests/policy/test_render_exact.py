"""The rendered policies grant CI exactly what keyvault grants it (T4); lint refuses what
AWS could not enforce as written (T3; issue 17).

Nothing here runs AWS: no server in this testbed enforces IAM, S3 bucket or
KMS key policies (moto does not), so the AWS side is proven by rendering: the
JSON is checked statement by statement, and the S3 resource patterns are
matched (``*`` spans slashes, ``?`` one character, as in AWS) against real
object names. The Vault side is proven against OpenBao in
``tests/cli/test_policy_openbao_limits.py``.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from keyvault.cli.app import main
from keyvault.envelope import new_header
from keyvault.errors import UsageError
from keyvault.names import KeyAddress, validate_gun
from keyvault.policy import (
    CI_DENIED_ROLES,
    MAX_GUN_DEPTH,
    parse_policy,
    principal_arn_patterns,
    render_aws,
    render_vault,
)

pytestmark = pytest.mark.proves("T3", "T4")

SCOPE_KEY = "kms:EncryptionContext:keyvault:scope"
ACCOUNT, OTHER = "111122223333", "444455556666"
KID = "ab" * 32
POLICY = f"""\
version = 1

[teams.pay]
guns = ["registry.example.com/pay/*"]
members = ["aws:arn:arn:aws:iam::{ACCOUNT}:role/pay-admin-*", "local:alice"]
ci = ["aws:arn:arn:aws:sts::{ACCOUNT}:assumed-role/pay-ci/*",
      "aws:arn:arn:aws:iam::{OTHER}:user/builder", "vault:meta:role=ci"]
store = "s3://keys-bucket/prod"
wrappers = ["awskms:///arn:aws:kms:eu-west-1:{ACCOUNT}:key/k1", "awskms:///alias/pay"]
"""


def docs() -> dict[str, dict[str, Any]]:
    return render_aws(parse_policy(POLICY))


def statements(name: str) -> list[dict[str, Any]]:
    return list(docs()[name]["Statement"])


def deepest_gun() -> str:
    """A valid GUN with the most segments the grammar allows."""
    return validate_gun("e" + "/x" * (MAX_GUN_DEPTH - 1))


# -- item 1: wildcard accounts, and what AWS evaluates ----------------------------------------


def test_every_principal_star_statement_is_limited_to_the_rules_accounts() -> None:
    rendered = docs()
    stars = [
        s
        for doc in rendered.values()
        for s in doc["Statement"]
        if s.get("Principal") == {"AWS": "*"}
    ]
    assert len(stars) == 2  # members and CI of the key policy
    for statement in stars:
        assert statement["Effect"] == "Allow"
        assert statement["Condition"]["StringEquals"]["aws:PrincipalAccount"], statement
    members, ci = stars
    assert members["Condition"]["StringEquals"]["aws:PrincipalAccount"] == [ACCOUNT]
    assert ci["Condition"]["StringEquals"]["aws:PrincipalAccount"] == [ACCOUNT, OTHER]


def test_the_key_policy_matches_the_role_arn_aws_puts_in_principal_arn() -> None:
    """aws:PrincipalArn of a role session is the role's IAM ARN, path included; an
    ``assumed-role`` pattern would never match it."""
    ci = next(s for s in statements("keyvault-pay-kms-key-policy") if s["Sid"].endswith("Ci"))
    patterns = ci["Condition"]["ArnLike"]["aws:PrincipalArn"]
    assert not any("assumed-role" in p or ":sts:" in p for p in patterns), patterns

    def admitted(arn: str) -> bool:
        return any(fnmatch.fnmatchcase(arn, p) for p in patterns)

    assert admitted(f"arn:aws:iam::{ACCOUNT}:role/pay-ci")
    assert admitted(f"arn:aws:iam::{ACCOUNT}:role/ci/runners/pay-ci")  # a role with a path
    assert admitted(f"arn:aws:iam::{OTHER}:user/builder")
    assert not admitted(f"arn:aws:iam::{OTHER}:role/pay-ci")
    assert not admitted(f"arn:aws:iam::{ACCOUNT}:role/pay-ci-evil")
    assert not admitted(f"arn:aws:sts::{ACCOUNT}:assumed-role/pay-ci/run-1")


def test_principal_arn_patterns_translate_or_keep() -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/"
    assert principal_arn_patterns(f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-*/*") == (
        role + "ci-*",
        role + "*/ci-*",
    )
    assert principal_arn_patterns(f"arn:aws:sts::{ACCOUNT}:assumed-role/*") == (
        role + "*",
        role + "*/*",
    )
    assert principal_arn_patterns(f"arn:aws:iam::{ACCOUNT}:user/ops/bob") == (
        f"arn:aws:iam::{ACCOUNT}:user/ops/bob",
    )
    assert principal_arn_patterns(f"arn:aws-cn:iam::{ACCOUNT}:root") == (
        f"arn:aws-cn:iam::{ACCOUNT}:root",
    )


REFUSED = [
    ("arn:aws:iam::*:role/pay-admin", "12-digit account"),
    ("arn:aws:iam::1111222233??:role/pay-admin", "12-digit account"),
    ("arn:aws:sts::*:assumed-role/pay-ci/*", "12-digit account"),
    ("arn:*:iam::111122223333:role/pay-admin", "partition"),
    ("arn:aws*:iam::111122223333:role/pay-admin", "partition"),
    ("arn:aws:sts::111122223333:assumed-role/pay-ci/gh-*", "session name"),
    ("arn:aws:sts::111122223333:assumed-role/pay-ci", "session name"),
    ("arn:aws:iam::111122223333:role/ci/pay-ci", "without its path"),
    ("arn:aws:iam:111122223333:role/x", "expected arn:PARTITION"),
]


@pytest.mark.parametrize(("arn", "needle"), REFUSED)
def test_lint_refuses_what_aws_cannot_enforce(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arn: str, needle: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.replace(f"arn:aws:sts::{ACCOUNT}:assumed-role/pay-ci/*", arn))
    for args in (
        ["policy", "validate", str(path)],
        ["policy", "render", str(path), "--target", "aws"],
    ):
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert f"{path}:6: teams.pay.ci:" in err and needle in err, err
    with pytest.raises(UsageError, match=needle.replace("?", r"\?")):
        principal_arn_patterns(arn)


# -- item 2: CI gets no root or timestamp key, whatever the depth -------------------------------


def test_ci_kms_grants_carry_the_role_of_the_encryption_context() -> None:
    header = new_header(
        address=KeyAddress("pay", "registry.example.com/pay/app", "timestamp", KID),
        algorithm=None,
        source_name=f"{KID}.key",
        source_mode=0o600,
        data=b"k",
    )
    role_key = "kms:EncryptionContext:" + next(k for k in header.context() if k.endswith("role"))
    ci = statements("keyvault-pay-ci")
    grants = [s for s in ci if s["Effect"] == "Allow" and s["Action"] == ["kms:Decrypt"]]
    assert len(grants) == 2  # by key ARN and by alias
    key_policy = next(
        s for s in statements("keyvault-pay-kms-key-policy") if s["Sid"].endswith("Ci")
    )
    for grant in [*grants, key_policy]:
        condition = grant["Condition"]
        assert condition["StringNotEquals"] == {role_key: list(CI_DENIED_ROLES)}, grant
        assert condition["Null"] == {role_key: "false", SCOPE_KEY: "true"}
        assert condition["StringEquals"]["kms:EncryptionContext:keyvault:team"] == "pay"
    denials = [s["Condition"] for s in ci if s["Effect"] == "Deny" and s["Action"] == "kms:*"]
    assert denials == [
        {"StringEquals": {role_key: ["root", "timestamp"]}},
        {"StringEquals": {SCOPE_KEY: "team"}},
    ]
    # Members keep every role, root included.
    member = json.dumps(docs()["keyvault-pay-member"])
    assert "keyvault:role" not in member


@pytest.mark.parametrize(
    ("gun", "role"),
    [(None, "targets"), (None, "snapshot"), (None, None), ("registry.example.com/pay/app", None)],
)
def test_keys_missing_a_fact_are_denied_to_ci_like_root(gun: str | None, role: str | None) -> None:
    """#18: S3 names, the KMS context and the Vault paths of team-only keys are denied to CI."""
    address = KeyAddress("pay", gun, role, KID)
    assert address.team_only
    assert not ci_may_read(address.object_name)
    context = new_header(
        address=address, algorithm=None, source_name=f"{KID}.key", source_mode=0o600, data=b"k"
    ).context()
    assert context[SCOPE_KEY.removeprefix("kms:EncryptionContext:")] == "team"
    # The KMS grant needs the scope absent; the explicit Deny names it.
    assert (
        "kms:EncryptionContext:keyvault:role" in {"kms:EncryptionContext:" + k for k in context}
    ) == (role is not None)
    vault = render_vault(
        parse_policy(
            POLICY.replace('store = "s3://keys-bucket/prod"', 'store = "vault://secret/kv"')
        )
    )
    section = address.object_name.split("/")[3]
    for kind in ("data", "metadata"):
        assert (
            f'path "secret/{kind}/kv/v1/teams/pay/{section}/*" {{\n  capabilities = '
            '["deny"]' in vault["keyvault-pay-ci"]
        )
    assert "deny" not in vault["keyvault-pay-member"]
    # Members read and write them as any other key of the team.
    member = statements("keyvault-pay-member")
    assert any(
        fnmatch.fnmatchcase(f"arn:aws:s3:::keys-bucket/prod/{address.object_name}", s["Resource"])
        for s in member
        if s["Sid"].endswith("Objects")
    )


def ci_may_read(object_name: str) -> bool:
    """Would the CI IAM policy let CI read this object (Allow matches, no Deny matches)?"""
    arn = f"arn:aws:s3:::keys-bucket/prod/{object_name}"

    def hits(statement: dict[str, Any]) -> bool:
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        actions = statement["Action"]
        reads = actions == "s3:*" or "s3:GetObject" in actions
        return reads and any(fnmatch.fnmatchcase(arn, r) for r in resources)

    ci = statements("keyvault-pay-ci")
    return any(s["Effect"] == "Allow" and hits(s) for s in ci) and not any(
        s["Effect"] == "Deny" and hits(s) for s in ci
    )


@pytest.mark.parametrize(
    "gun",
    [
        "registry.example.com/pay/app",
        "registry.example.com/pay/a/b/c/d/e/f",
        "registry.example.com/pay/timestamp/app",
        "registry.example.com/pay/root",
        deepest_gun(),
    ],
)
def test_ci_s3_reads_gun_keys_but_never_timestamp_or_root_at_any_depth(gun: str) -> None:
    for role in ("targets", "snapshot", "targets/releases", "alice", "timestamp"):
        name = KeyAddress("pay", gun, role, KID).object_name
        assert ci_may_read(name) == (role != "timestamp"), name
    # A root envelope put where keyvault never writes one is refused as well.
    assert not ci_may_read(f"v1/teams/pay/guns/{gun}/root/{KID}.json")
    assert not ci_may_read(KeyAddress("pay", None, "root", KID).object_name)
    assert ci_may_read(KeyAddress("pay", None, "targets/releases", KID).object_name)
    assert not ci_may_read(f"v1/teams/pay/delegations/timestamp/{KID}.json")


def test_vault_ci_render_covers_the_deepest_gun_the_grammar_allows() -> None:
    policy = parse_policy(
        POLICY.replace('store = "s3://keys-bucket/prod"', 'store = "vault://secret/kv"')
    )
    ci = render_vault(policy)["keyvault-pay-ci"]
    deepest = "guns/" + "+/" * MAX_GUN_DEPTH
    for role in CI_DENIED_ROLES:
        assert (
            f'path "secret/data/kv/v1/teams/pay/{deepest}{role}/+" '
            '{ capabilities = ["deny"] }' in ci
        )
        assert (
            f'path "secret/metadata/kv/v1/teams/pay/{deepest}{role}/+" '
            '{ capabilities = ["list"] }' in ci
        )
    assert deepest_gun().count("/") + 1 == MAX_GUN_DEPTH
    with pytest.raises(UsageError):
        validate_gun(deepest_gun() + "/x")  # one segment more is not a GUN
