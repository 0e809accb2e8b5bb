"""Who is asking, on AWS: STS GetCallerIdentity against moto's STS, then the policy decides."""

from __future__ import annotations

from pathlib import Path

from fixtures.kms import MotoServer

from keyvault.names import KeyAddress
from keyvault.ops.access import aws_principal
from keyvault.plugins import BackendOptions
from keyvault.policy import authorize, parse_policy

KID = "cd" * 32


def test_the_caller_arn_comes_from_sts_and_the_policy_matches_it(moto_kms: MotoServer,
                                                                tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL_STS": moto_kms.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    principal = aws_principal(BackendOptions(env=env))
    assert principal.name.startswith("aws:arn:arn:aws:")
    account = principal.name.split(":")[6]
    policy = parse_policy(
        'version = 1\n\n[teams.payments]\nguns = ["example.com/pay/*"]\n'
        f'members = ["aws:arn:arn:aws:*::{account}:*"]\nci = []\n')
    address = KeyAddress("payments", None, "root", KID)
    assert authorize(policy, principal, "restore", address).allowed
    other = parse_policy('version = 1\n\n[teams.payments]\nguns = ["example.com/pay/*"]\n'
                         'members = ["aws:arn:arn:aws:iam::999999999999:role/admin"]\n'
                         'ci = []\n')
    decision = authorize(other, principal, "restore", address)
    assert not decision.allowed and principal.name in decision.error().message
