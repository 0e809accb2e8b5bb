"""Who is asking, on AWS: STS GetCallerIdentity against moto's STS, then the policy decides."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.kms import MotoServer

from keyvault.names import KeyAddress
from keyvault.ops.access import aws_principal
from keyvault.plugins import BackendOptions
from keyvault.policy import authorize, parse_policy

KID = "cd" * 32


def test_the_caller_arn_comes_from_sts_and_the_policy_matches_it(
    moto_kms: MotoServer, tmp_path: Path
) -> None:
    env = {
        "AWS_ENDPOINT_URL_STS": moto_kms.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    principal = aws_principal(BackendOptions(env=env))
    assert principal.name.startswith("aws:arn:arn:aws:")
    account = principal.name.split(":")[6]
    policy = parse_policy(
        'version = 1\n\n[teams.payments]\nguns = ["example.com/pay/*"]\n'
        f'members = ["aws:arn:arn:aws:*::{account}:*"]\nci = []\n'
    )
    address = KeyAddress("payments", None, "root", KID)
    assert authorize(policy, principal, "restore", address).allowed
    other = parse_policy(
        'version = 1\n\n[teams.payments]\nguns = ["example.com/pay/*"]\n'
        'members = ["aws:arn:arn:aws:iam::999999999999:role/admin"]\n'
        "ci = []\n"
    )
    decision = authorize(other, principal, "restore", address)
    assert not decision.allowed and principal.name in decision.error().message


@pytest.mark.proves("T3")
def test_a_redirected_sts_endpoint_claims_any_identity_to_keyvaults_own_check() -> None:
    """Why keyvault's check is only an early refusal (T3, docs/teams.md): it
    believes whatever answers at AWS_ENDPOINT_URL_STS. The backends' policies decide."""
    import http.server
    import threading

    claimed = "arn:aws:sts::111122223333:assumed-role/payments-admin/anyone"
    body = (
        f'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<GetCallerIdentityResult><Arn>{claimed}</Arn><UserId>AROAX:anyone</UserId>"
        "<Account>111122223333</Account></GetCallerIdentityResult>"
        "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
        "</GetCallerIdentityResponse>"
    ).encode()

    class FakeSts(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeSts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{server.server_address[1]}",
            "AWS_ACCESS_KEY_ID": "nobody",
            "AWS_SECRET_ACCESS_KEY": "nothing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        principal = aws_principal(BackendOptions(env=env))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert principal.name == f"aws:arn:{claimed}" and not principal.claimed
    policy = parse_policy(
        'version = 1\n\n[teams.payments]\nguns = ["example.com/pay/*"]\n'
        'members = ["aws:arn:arn:aws:iam::111122223333:role/payments-admin"]\nci = []\n'
    )
    assert authorize(
        policy, principal, "restore", KeyAddress("payments", None, "root", KID)
    ).allowed
