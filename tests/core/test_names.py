"""Grammars for names that become paths or object names (T9)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyvault.errors import UsageError
from keyvault.names import (
    CertAddress,
    KeyAddress,
    PinAddress,
    audit_prefix,
    change_marker_name,
    gun_matches,
    team_prefix,
    validate_gun,
    validate_gun_glob,
    validate_key_id,
    validate_role,
    validate_team,
)

pytestmark = pytest.mark.proves("T9")

KID = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "gun",
    [
        "example.com/team-a/app",
        "docker.io/library/alpine",
        "localhost:5000/app",
        "registry.example.com/a/b/c_d.e-f",
        "app",
    ],
)
def test_valid_guns(gun: str) -> None:
    assert validate_gun(gun) == gun


@pytest.mark.parametrize(
    "gun",
    [
        "",
        "/abs/path",
        "a/../b",
        "..",
        "a//b",
        "a/",
        "a/./b",
        "a/B",
        "a/\x00b",
        "a/b\n",
        "a\\b",
        "a/" + "x" * 300,
        " a",
        "a/-b",
        "a/b-",
    ],
)
@pytest.mark.proves("B09")
def test_invalid_guns(gun: str) -> None:
    """B09: GUN with '..' or a leading '/' (and friends)."""
    with pytest.raises(UsageError):
        validate_gun(gun)


@pytest.mark.parametrize("team", ["a", "team-a", "x1", "a" * 63])
def test_valid_teams(team: str) -> None:
    assert validate_team(team) == team


@pytest.mark.parametrize("team", ["", "team/a", "Team", "-a", "a-", "a" * 64, "..", "a b", "a_b"])
@pytest.mark.proves("B34")
def test_invalid_teams(team: str) -> None:
    """B34: team name with a slash (and friends)."""
    with pytest.raises(UsageError, match="invalid team name"):
        validate_team(team)


@pytest.mark.parametrize(
    "role",
    [
        "root",
        "targets",
        "snapshot",
        "timestamp",
        "targets/releases",
        "targets/a/b",
        "alice",
        "delegation",
        "signer-1",
    ],
)
def test_valid_roles(role: str) -> None:
    assert validate_role(role) == role


@pytest.mark.parametrize(
    "role",
    [
        "",
        "Root",
        "targets/",
        "targets//x",
        "../x",
        "a/b",
        "targets/../root",
        "x y",
        "targets/Releases",
        "root\n",
    ],
)
@pytest.mark.proves("B08")
def test_unknown_roles(role: str) -> None:
    """B08: unknown role value."""
    with pytest.raises(UsageError, match="unknown role"):
        validate_role(role)


@pytest.mark.parametrize("kid", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "../" + "a" * 61])
def test_invalid_key_ids(kid: str) -> None:
    with pytest.raises(UsageError):
        validate_key_id(kid)


@pytest.mark.parametrize(
    "address",
    [
        KeyAddress("team-a", None, "root", KID),
        KeyAddress("team-a", "example.com/team-a/app", "targets", KID),
        KeyAddress("team-a", "example.com/x/targets", "targets/releases", KID),
        KeyAddress("team-a", None, "targets/releases", KID),
        KeyAddress("team-a", None, "alice", KID),
        KeyAddress("t", "localhost:5000/app", "snapshot", KID),
    ],
)
def test_object_names_round_trip(address: KeyAddress) -> None:
    name = address.object_name
    assert ".." not in name.split("/") and not name.startswith("/")
    assert KeyAddress.from_object_name(name) == address


def test_object_name_layout_matches_design() -> None:
    assert KeyAddress("a", None, "root", KID).object_name == f"v1/teams/a/root/{KID}.json"
    assert (
        KeyAddress("a", "example.com/app", "targets/rel", KID).object_name
        == f"v1/teams/a/guns/example.com/app/targets~rel/{KID}.json"
    )


def test_root_keys_have_no_gun() -> None:
    with pytest.raises(UsageError):
        KeyAddress("a", "example.com/app", "root", KID)


def test_keys_missing_a_fact_have_sections_of_their_own() -> None:
    """A GUN-less targets key and role-less keys: names no GUN-scoped grant covers (#18)."""
    names = {
        KeyAddress("a", None, "targets", KID): f"v1/teams/a/nogun/targets/{KID}.json",
        KeyAddress("a", None, "snapshot", KID): f"v1/teams/a/nogun/snapshot/{KID}.json",
        KeyAddress("a", None, None, KID): f"v1/teams/a/norole/{KID}.json",
        KeyAddress(
            "a", "example.com/app", None, KID
        ): f"v1/teams/a/norole/example.com/app/{KID}.json",
    }
    for address, name in names.items():
        assert address.object_name == name
        assert KeyAddress.from_object_name(name) == address
        assert address.team_only
    assert not KeyAddress("a", "example.com/app", "targets", KID).team_only
    assert not KeyAddress("a", None, "targets/releases", KID).team_only
    assert KeyAddress("a", None, "root", KID).team_only


@pytest.mark.parametrize(
    "name",
    [
        f"v1/teams/a/delegations/targets/{KID}.json",  # a GUN role under delegations/
        f"v1/teams/a/delegations/root/{KID}.json",
        f"v1/teams/a/nogun/alice/{KID}.json",  # only GUN roles lack a GUN
        f"v1/teams/a/nogun/root/{KID}.json",
        f"v1/teams/a/nogun/{KID}.json",
        f"v1/teams/a/norole/../{KID}.json",
        f"v1/teams/a/norole/Example.com/{KID}.json".replace("E", "e") + "x",
        f"v1/teams/a/norole/a//b/{KID}.json",
    ],
)
def test_names_of_the_team_only_sections_are_validated(name: str) -> None:
    with pytest.raises(UsageError):
        KeyAddress.from_object_name(name)


_ROLES = st.sampled_from(
    [None, "root", "targets", "snapshot", "timestamp", "targets/releases", "alice"]
)
_GUNS = st.sampled_from(
    [None, "example.com/app", "norole", "nogun/x", "a/b/c", "example.com/targets"]
)


@given(_ROLES, _GUNS, _ROLES, _GUNS)
def test_object_names_parse_back_and_never_collide(
    role: str | None, gun: str | None, role2: str | None, gun2: str | None
) -> None:
    addresses = []
    for r, g in ((role, gun), (role2, gun2)):
        try:
            addresses.append(KeyAddress("a", g, r, KID))
        except UsageError:
            assert r == "root" and g is not None
            return
    one, two = addresses
    assert KeyAddress.from_object_name(one.object_name) == one
    assert (one.object_name == two.object_name) == (one == two)
    scoped = one.object_name.startswith(("v1/teams/a/guns/", "v1/teams/a/delegations/"))
    assert scoped != one.team_only


@pytest.mark.parametrize(
    "name",
    [
        "v1/teams/a/root/x.json",
        "v1/teams/A/root/" + KID + ".json",
        "v2/teams/a/root/" + KID + ".json",
        "v1/teams/a/guns/../targets/" + KID + ".json",
        "v1/teams/a/root/" + KID,
        "v1/teams/a/other/" + KID + ".json",
    ],
)
def test_foreign_object_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError):
        KeyAddress.from_object_name(name)


@given(st.text(max_size=80))
def test_from_object_name_never_crashes(name: str) -> None:
    try:
        address = KeyAddress.from_object_name(name)
    except UsageError:
        return
    assert address.object_name == name


def test_gun_globs() -> None:
    assert gun_matches("example.com/team-a/app", "example.com/team-a/*")
    assert not gun_matches("example.com/team-b/app", "example.com/team-a/*")
    assert not gun_matches(None, "*")
    with pytest.raises(UsageError):
        validate_gun_glob("../x")
    with pytest.raises(UsageError):
        validate_gun_glob("a b")


@pytest.mark.parametrize(
    "address",
    [
        KeyAddress("a", None, "root", KID),
        KeyAddress("a", "example.com/app", "targets", KID),
        KeyAddress("a", None, "targets/releases", KID),
        KeyAddress("a", None, "targets", KID),  # a canonical role without its GUN
        KeyAddress("a", "example.com/app", None, KID),  # a GUN without a role
        PinAddress.of("a", "0.example.com/app"),
        CertAddress.ca("a", "ca"),
        CertAddress.server("a", "notary.example.com:4443"),
    ],
)
def test_every_name_in_a_team_sorts_after_its_audit_checkpoints(address: KeyAddress) -> None:
    """A listing of a team's folder starts past ``audit/`` (keyvault.ops.stored): a section
    that sorted before it would never be listed, so every kind of name is checked here."""
    from keyvault.ops.stored import listing_start

    start = listing_start("a", team_prefix("a"))
    assert start and address.object_name > start
    assert change_marker_name("a") > start
    assert (audit_prefix("a") + "checkpoints/" + "f" * 32 + "/x.json") < start
