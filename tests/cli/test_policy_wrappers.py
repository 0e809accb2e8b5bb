"""B36: a team policy naming a wrapper keyvault cannot use is refused where it is loaded.

Before, ``policy validate`` called such a policy valid, and the mistake showed
only when a backend policy was rendered for it or a member tried to use it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.host import Unchanged

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir

GOOD = (
    '[teams.a]\nguns = ["example.com/team-a/*"]\nmembers = ["local:{user}"]\n'
    'wrappers = [\n  "transit://transit/team-a",\n  {bad},\n]\n'
)


@pytest.mark.proves("B36")
@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ('"rot13://team-a"', "unknown wrapper URI scheme 'rot13'"),
        ('"age1notarecipient"', "invalid age recipient"),
        ('"pkcs11:token=hsm;colour=blue"', "colour"),
    ],
)
def test_validate_names_the_team_the_uri_and_the_line(
    kv: KV, tmp_path: Path, bad: str, says: str
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(GOOD.format(user="alice", bad=bad))
    run = kv("policy", "validate", policy)
    assert run.code == 2, run.out + run.err
    assert f"{policy}:6: teams.a.wrappers:" in run.err and says in run.err, run.err
    policy.write_text(GOOD.format(user="alice", bad='"awskms:///alias/team-a"'))
    assert kv("policy", "validate", policy).code == 0


@pytest.mark.proves("B36")
def test_a_backup_under_such_a_policy_writes_nothing(kv: KV, home: Path) -> None:
    import getpass

    trust = home / ".docker" / "trust"
    write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), "pw"), ("example.com/team-a/app",)
    )
    config = Path(kv("--json", "init").json()["config_file"])
    store = home / ".local" / "share" / "keyvault" / "store"
    policy = home / "policy.toml"
    policy.write_text(GOOD.format(user=getpass.getuser(), bad='"rot13://team-a"'))
    policy.chmod(0o600)
    config.write_text(
        config.read_text().replace("[keyvault]\n", f'[keyvault]\npolicy = "{policy}"\n', 1)
    )
    guard = Unchanged(trust, store)
    run = kv("--team", "a", "backup")
    assert run.code == 2, run.out + run.err
    assert "unknown wrapper URI scheme 'rot13'" in run.err and f"{policy}:6" in run.err
    guard.check()
