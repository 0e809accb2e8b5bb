"""keyvault.policy without any server: parsing, line numbers, glob overlap, decisions, renders."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyvault.errors import AccessDeniedError, InvalidInputError, UsageError
from keyvault.names import KeyAddress
from keyvault.policy import (
    Policy,
    Principal,
    authorize,
    aws_facts,
    claimed_principal,
    glob_intersection,
    load_policy,
    parse_policy,
    parse_principal_rule,
    render_aws,
    render_files,
    render_vault,
    team_for_gun,
)

K1, K2, K3 = "1" * 64, "2" * 64, "3" * 64

POLICY = """\
version = 1

[teams.team-a]
guns = ["registry.example.com/team-a/*"]
members = ["local:alice", "vault:name:token-alice"]
ci = ["local:ci-a@runner-*", "vault:meta:role=ci-team-a",
      "aws:arn:arn:aws:iam::123456789012:role/team-a-ci"]
store = "vault://secret/keyvault"
wrappers = ["transit://transit/team-a-kek", "awskms:///alias/team-a"]

[teams.team-b]
guns = ["registry.example.com/team-b/*", "other.example.com/b"]
members = ["local:bob", "vault:entity:ent-b"]
ci = []
store = "s3://keys-bucket/prod"
wrappers = ["awskms:///arn:aws:kms:us-east-1:123456789012:key/abcd"]
"""


def policy(text: str = POLICY) -> Policy:
    return parse_policy(text, Path("policy.toml"))


def local(user: str, host: str = "laptop") -> Principal:
    return Principal("local", f"local:{user}@{host}", {"user": user, "host": host})


def addr(team: str, gun: str | None, role: str | None, key_id: str = K1) -> KeyAddress:
    return KeyAddress(team, gun, role, key_id)


# -- loading and line numbers ---------------------------------------------------------------


def test_the_example_loads() -> None:
    p = parse_policy(POLICY)
    assert sorted(p.teams) == ["team-a", "team-b"]
    assert p.teams["team-a"].ci[2].pattern.endswith("role/team-a-ci")


def error_of(text: str) -> str:
    with pytest.raises(InvalidInputError) as info:
        parse_policy(text, Path("policy.toml"))
    return info.value.message


@pytest.mark.proves("B35")
def test_overlapping_guns_are_refused_with_the_line() -> None:
    text = POLICY.replace('"other.example.com/b"', '"registry.example.com/*/app"')
    message = error_of(text)
    line = (
        text.splitlines().index(
            'guns = ["registry.example.com/team-b/*", "registry.example.com/*/app"]'
        )
        + 1
    )
    assert message.startswith(f"policy.toml:{line}: ")
    assert "overlaps 'registry.example.com/team-a/*' of team team-a" in message
    assert "registry.example.com/team-a/app" in message  # the witness both match


def test_overlap_on_a_continuation_line_names_that_line() -> None:
    text = POLICY.replace(
        'guns = ["registry.example.com/team-b/*", "other.example.com/b"]',
        'guns = [\n  "registry.example.com/team-b/*",\n  "*/team-a/web",\n]',
    )
    line = text.splitlines().index('  "*/team-a/web",') + 1
    assert error_of(text).startswith(f"policy.toml:{line}: ")


@pytest.mark.proves("B35")
def test_declared_sharing_allows_an_overlap_only_if_both_sides_declare_it() -> None:
    shared = POLICY.replace('"other.example.com/b"', '"registry.example.com/team-a/shared"')
    one_side = shared.replace("ci = []\n", 'ci = []\nshared_with = ["team-a"]\n')
    assert "overlaps" in error_of(one_side)
    both = one_side.replace(
        'members = ["local:alice"', 'shared_with = ["team-b"]\nmembers = ["local:alice"'
    )
    p = parse_policy(both)
    with pytest.raises(UsageError, match="shared by teams team-a, team-b"):
        team_for_gun(p, "registry.example.com/team-a/shared")


@pytest.mark.parametrize(
    ("old", "new", "needle", "fragment"),
    [
        (
            'members = ["local:bob"',
            'members = ["ldap:bob"',
            'members = ["ldap:bob"',
            "must start with",
        ),
        ("ci = []", 'ci = []\ncolour = "red"', 'colour = "red"', "unknown key 'colour'"),
        (
            '"other.example.com/b"',
            '"other.example.com/../b"',
            '"other.example.com/../b"',
            "invalid GUN pattern",
        ),
        ("[teams.team-b]", "[teams.Team_B]", "[teams.Team_B]", "invalid team name"),
        (
            "ci = []",
            'ci = []\nshared_with = ["team-z"]',
            'shared_with = ["team-z"]',
            "not another declared team",
        ),
    ],
)
def test_semantic_errors_point_at_their_line(
    old: str, new: str, needle: str, fragment: str
) -> None:
    text = POLICY.replace(old, new, 1)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if needle in t)
    message = error_of(text)
    assert message.startswith(f"policy.toml:{line}: "), message
    assert fragment in message


def test_syntax_errors_keep_tomllib_line_and_default_team_is_checked() -> None:
    assert "line 3" in error_of("version = 1\n\n[teams.a\n")
    message = error_of('default_team = "nobody"\n' + POLICY)
    assert message.startswith("policy.toml:1: ") and "not a declared team" in message


def test_load_policy_errors(tmp_path: Path) -> None:
    from keyvault.errors import NotFoundError

    with pytest.raises(NotFoundError):
        load_policy(tmp_path / "absent.toml")
    (tmp_path / "p.toml").write_text(POLICY)
    assert load_policy(tmp_path / "p.toml").source == tmp_path / "p.toml"


# -- glob intersection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("registry/team-a/*", "registry/team-b/*", False),
        ("registry/team-a/*", "registry/*/app", True),
        ("a*", "*b", True),
        ("a?c", "abd", False),
        ("*", "", True),
        ("a", "a*", True),
        ("*x*y*", "*y*x*", True),
        ("ab", "a", False),
        ("reg/a*", "reg/b*", False),
        ("?", "", False),
    ],
)
def test_glob_intersection_examples(a: str, b: str, overlap: bool) -> None:
    witness = glob_intersection(a, b)
    assert (witness is not None) == overlap
    if witness is not None:
        assert fnmatch.fnmatchcase(witness, a) and fnmatch.fnmatchcase(witness, b)


ALPHABET = "ab/"
globs = st.text(alphabet=ALPHABET + "*?", max_size=7)
names = st.text(alphabet=ALPHABET, max_size=8)


@settings(max_examples=400, deadline=None)
@given(globs, globs, st.lists(names, max_size=30))
def test_glob_intersection_agrees_with_fnmatch(a: str, b: str, samples: list[str]) -> None:
    witness = glob_intersection(a, b)
    if witness is not None:  # sound: the witness really matches both
        assert fnmatch.fnmatchcase(witness, a) and fnmatch.fnmatchcase(witness, b)
    for name in samples:  # complete: any common name means an intersection was found
        if fnmatch.fnmatchcase(name, a) and fnmatch.fnmatchcase(name, b):
            assert witness is not None, (a, b, name)
    assert (glob_intersection(b, a) is None) == (witness is None)


@settings(max_examples=300, deadline=None)
@given(globs, globs)
def test_no_intersection_means_no_short_common_name(a: str, b: str) -> None:
    if glob_intersection(a, b) is None:
        # exhaustive over every name up to length 5: none matches both
        import itertools

        for n in range(6):
            for chars in itertools.product(ALPHABET, repeat=n):
                name = "".join(chars)
                assert not (fnmatch.fnmatchcase(name, a) and fnmatch.fnmatchcase(name, b))


# -- principals --------------------------------------------------------------------------


def test_principal_rules() -> None:
    assert parse_principal_rule("local:alice").matches(local("alice", "any"))
    assert parse_principal_rule("local:alice@lap*").matches(local("alice", "laptop"))
    assert not parse_principal_rule("local:alice@srv").matches(local("alice", "laptop"))
    vault = Principal(
        "vault",
        "vault:entity:e1",
        {
            "entity": "e1",
            "name": "jwt-x",
            "meta:role": "ci-team-a",
            "policy:keyvault-team-a-ci": "",
        },
    )
    assert parse_principal_rule("vault:entity:e1").matches(vault)
    assert parse_principal_rule("vault:meta:role=ci-*").matches(vault)
    assert parse_principal_rule("vault:policy:keyvault-team-a-*").matches(vault)
    assert not parse_principal_rule("vault:name:token-*").matches(vault)
    assert not parse_principal_rule("local:e1").matches(vault)
    for bad in (
        "alice",
        "vault:who:x",
        "vault:meta:novalue",
        "aws:role:x",
        "local:",
        "local:a b",
        "aws:arn:not-an-arn",
    ):
        with pytest.raises(UsageError):
            parse_principal_rule(bad)


def test_aws_assumed_role_matches_its_role_and_its_session() -> None:
    facts = aws_facts("arn:aws:sts::123456789012:assumed-role/team-a-ci/gh-run-42")
    assert facts["role_arn"] == "arn:aws:iam::123456789012:role/team-a-ci"
    assert facts["session"] == "gh-run-42"
    ci = Principal("aws", "aws:arn:x", facts)
    assert parse_principal_rule("aws:arn:arn:aws:iam::123456789012:role/team-a-*").matches(ci)
    assert parse_principal_rule(
        "aws:arn:arn:aws:sts::123456789012:assumed-role/team-a-ci/*"
    ).matches(ci)
    assert not parse_principal_rule(
        "aws:arn:arn:aws:sts::123456789012:assumed-role/other/*"
    ).matches(ci)


def test_claimed_principal_is_marked_and_has_no_wildcards() -> None:
    p = claimed_principal("local:alice@laptop")
    assert p.claimed and "claimed" in str(p)
    with pytest.raises(UsageError):
        claimed_principal("local:*")
    # One session of a role is a principal, though no rule may name a session.
    session = claimed_principal("aws:arn:arn:aws:sts::123456789012:assumed-role/ci/run-7")
    assert session.facts["role_arn"] == "arn:aws:iam::123456789012:role/ci"


# -- decisions ----------------------------------------------------------------------------


def test_members_may_do_everything_to_every_role_of_their_team() -> None:
    p = policy()
    alice = local("alice")
    for action in ("backup", "restore", "fetch", "rewrap", "list", "drill"):
        for address in (
            addr("team-a", None, "root"),
            addr("team-a", "registry.example.com/team-a/app", "targets"),
            addr("team-a", None, "targets/releases"),
        ):
            assert authorize(p, alice, action, address).allowed


def test_ci_fetches_targets_snapshot_delegations_never_root_never_backup() -> None:
    p = policy()
    ci = local("ci-a", "runner-7")
    gun = "registry.example.com/team-a/app"
    assert authorize(p, ci, "restore", addr("team-a", gun, "targets")).allowed
    assert authorize(p, ci, "fetch", addr("team-a", gun, "snapshot")).allowed
    assert authorize(p, ci, "fetch", addr("team-a", gun, "targets/releases")).allowed
    root = authorize(p, ci, "restore", addr("team-a", None, "root"))
    assert not root.allowed and "never get root" in root.rule
    err = root.error()
    assert isinstance(err, AccessDeniedError) and err.exit_code == 4
    assert "local:ci-a@runner-7" in err.message and K1[:16] in err.message
    assert "root key" in err.message and "teams.team-a.ci" in err.message
    assert not authorize(p, ci, "backup", addr("team-a", gun, "targets")).allowed
    assert not authorize(p, ci, "restore", addr("team-a", gun, "timestamp")).allowed
    # Not a CI principal on another host:
    assert not authorize(
        p, local("ci-a", "laptop"), "fetch", addr("team-a", gun, "targets")
    ).allowed


def test_keys_missing_a_fact_belong_to_the_team_like_root() -> None:
    """#18: a GUN-less targets/snapshot key or a role-less key is the members', never CI's."""
    p = policy()
    ci, alice = local("ci-a", "runner-7"), local("alice")
    gun = "registry.example.com/team-a/app"
    for address, missing in (
        (addr("team-a", None, "targets"), "GUN"),
        (addr("team-a", None, "snapshot"), "GUN"),
        (addr("team-a", None, None), "role"),
        (addr("team-a", gun, None), "role"),
    ):
        for action in ("fetch", "restore", "list"):
            refused = authorize(p, ci, action, address)
            assert not refused.allowed, (address, action)
            assert f"names no {missing}" in refused.rule
            assert authorize(p, alice, action, address).allowed
        message = authorize(p, ci, "fetch", address).error().message
        assert ("(no role)" if missing == "role" else "(no gun)") in message
    # GUN-less delegation keys stay CI's, as before.
    assert authorize(p, ci, "fetch", addr("team-a", None, "targets/releases")).allowed


def test_other_teams_and_foreign_guns_are_refused() -> None:
    p = policy()
    bob = local("bob")
    refused = authorize(p, bob, "restore", addr("team-a", None, "root"))
    assert not refused.allowed and "neither a member nor a CI principal" in refused.rule
    # A member of team-a cannot file team-b's GUN under team-a:
    moved = authorize(
        p, local("alice"), "backup", addr("team-a", "registry.example.com/team-b/api", "targets")
    )
    assert not moved.allowed and "belongs to team team-b" in moved.rule
    orphan = authorize(
        p, local("alice"), "backup", addr("team-a", "nobody.example.com/x", "targets")
    )
    assert not orphan.allowed and "matches no team" in orphan.rule
    assert not authorize(p, local("alice"), "list", addr("team-z", None, "root")).allowed


def test_default_team_takes_unclaimed_guns_only_when_declared() -> None:
    with pytest.raises(AccessDeniedError, match="matches no team"):
        team_for_gun(policy(), "nobody.example.com/x")
    p = parse_policy('default_team = "team-b"\n' + POLICY)
    assert team_for_gun(p, "nobody.example.com/x") == "team-b"
    assert team_for_gun(p, "registry.example.com/team-a/app") == "team-a"
    assert authorize(
        p, local("bob"), "backup", addr("team-b", "nobody.example.com/x", "targets")
    ).allowed


# -- rendering -------------------------------------------------------------------------------


def test_vault_render_member_and_ci() -> None:
    rendered = render_vault(policy())
    assert sorted(rendered) == ["keyvault-team-a-ci", "keyvault-team-a-member"]
    member, ci = rendered["keyvault-team-a-member"], rendered["keyvault-team-a-ci"]
    assert 'path "secret/data/keyvault/v1/teams/team-a/*"' in member
    assert 'path "transit/encrypt/team-a-kek"' in member
    blocks = re.findall(r'path "([^"]*)" \{\s*capabilities = \[([^\]]*)\]', ci)
    rooted = [caps for path, caps in blocks if "/root" in path]
    assert rooted and all(caps in ('"deny"', '"list"') for caps in rooted)
    assert 'path "secret/data/keyvault/v1/teams/team-a/guns/*"' in ci
    assert 'path "secret/data/keyvault/v1/teams/team-a/delegations/*"' in ci
    assert "encrypt/" not in ci.replace("decrypt/", "") and '"create"' not in ci
    assert ci.count('"update"') == 1 and 'path "transit/decrypt/team-a-kek"' in ci


def test_aws_render_scopes_prefixes_and_encryption_context() -> None:
    docs = render_aws(policy())
    assert set(docs) >= {
        "keyvault-team-b-member",
        "keyvault-team-b-ci",
        "keyvault-team-a-member",
        "keyvault-team-a-kms-key-policy",
    }
    member = json.dumps(docs["keyvault-team-b-member"])
    assert "arn:aws:s3:::keys-bucket/prod/v1/teams/team-b/*" in member
    assert '"kms:EncryptionContext:keyvault:team": "team-b"' in member
    ci = docs["keyvault-team-b-ci"]
    allowed = [s for s in ci["Statement"] if s["Effect"] == "Allow"]
    assert all("root" not in json.dumps(s["Resource"]) for s in allowed)
    assert any(
        s["Effect"] == "Deny" and s["Resource"].endswith("/team-b/root/*") for s in ci["Statement"]
    )
    kms = [s for s in allowed if any(a.startswith("kms:") for a in s["Action"])]
    assert kms and all(s["Action"] == ["kms:Decrypt"] for s in kms)
    key_policy = docs["keyvault-team-a-kms-key-policy"]["Statement"]
    assert key_policy[0]["Condition"]["ArnLike"]["aws:PrincipalArn"] == [
        "arn:aws:iam::123456789012:role/*/team-a-ci",
        "arn:aws:iam::123456789012:role/team-a-ci",
    ]
    files = render_files(policy(), "aws")
    assert all(name.endswith(".json") for name in files)
    with pytest.raises(UsageError):
        render_files(policy(), "gcp")
