"""Passphrase variables per role, as notary and the docker CLI read them."""

from __future__ import annotations

import pytest

from keyvault.errors import UsageError
from keyvault.trust.passphrases import passphrase_for, variables_for


@pytest.mark.parametrize(
    ("role", "names"),
    [
        ("root", ("NOTARY_ROOT_PASSPHRASE", "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE")),
        ("targets", ("NOTARY_TARGETS_PASSPHRASE", "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE")),
        ("snapshot", ("NOTARY_SNAPSHOT_PASSPHRASE", "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE")),
        (
            "targets/releases",
            ("NOTARY_DELEGATION_PASSPHRASE", "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE"),
        ),
        ("alice", ("NOTARY_DELEGATION_PASSPHRASE", "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE")),
        # notary: timestamp is a base role, so NOTARY_DELEGATION_PASSPHRASE does not apply
        ("timestamp", ("DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE",)),
    ],
)
def test_variables_per_role(role: str, names: tuple[str, ...]) -> None:
    assert variables_for(role) == names


def test_first_set_variable_wins() -> None:
    env = {"NOTARY_TARGETS_PASSPHRASE": "n", "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE": "d"}
    assert passphrase_for("targets", env) == "n"
    assert passphrase_for("snapshot", env) == "d"
    assert passphrase_for("root", env) is None
    assert passphrase_for("root", {"NOTARY_DELEGATION_PASSPHRASE": "x"}) is None


@pytest.mark.parametrize("name", ["NOTARY_ROOT_PASSPHRASE", "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE"])
@pytest.mark.proves("B15")
def test_b15_set_but_empty_names_the_variable(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        passphrase_for("root", {name: "", "OTHER": "secret-value"})
    assert name in str(caught.value) and "secret-value" not in str(caught.value)
    assert caught.value.exit_code == 2
