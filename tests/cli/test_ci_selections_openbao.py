"""CI selections by wildcard or ``--key-id`` on OpenBao with the rendered CI policy (issue 18).

The CI policy lets a CI token list its GUNs' folders (``guns/``, ``delegations/``)
and never the team's folder or ``root/``. keyvault lists only the folders a
selection can pick from, and, when the teams policy names the principal as CI,
never ``root/``: wildcard and ``--key-id`` selections work. Without a teams
policy the refusal names the ``--gun`` form that works. The team (rendered
policies, store prefix) is this module's own: other modules plant objects in
theirs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.conftest import KV
from cli.test_policy_openbao_limits import Team, config, stored, team, use
from keyvault.names import KeyAddress

__all__ = ["stored", "team"]  # fixtures, used by name


@pytest.mark.proves("T4")
def test_ci_selects_by_wildcard_and_key_id_within_what_it_may_list(
    kv: KV,
    team: Team,
    stored: dict[str, KeyAddress],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the rendered CI policy OpenBao refuses to list the team's folder; keyvault, told
    by the teams policy that this is CI, lists only guns/ and delegations/ (before: 403,
    exit 4, for any selection but an exact GUN)."""
    use(monkeypatch, team, team.token("ci"))
    cfg = config(home, team)
    targets = {label: a for label, a in stored.items() if a.role == "targets"}
    tag = str(stored["targets@3"].gun).rsplit("-", 1)[1]  # this test's GUNs (others' share
    pattern = f"example.com/{team.name}/*{tag}*"  # the team and its store)
    run = kv(
        "--config",
        cfg,
        "--trust-dir",
        tmp_path / "wild",
        "--json",
        "restore",
        "--gun",
        pattern,
        "--role",
        "targets",
    )
    assert run.code == 0, run.err
    assert {k["key_id"] for k in run.json()["keys"]} == {a.key_id for a in targets.values()}
    deep = stored["targets@6"]
    listed = kv("--config", cfg, "--json", "list", "--key-id", deep.key_id)
    assert listed.code == 0, listed.err
    assert [k["key_id"] for k in listed.json()["keys"]] == [deep.key_id]
    run = kv("--config", cfg, "--trust-dir", tmp_path / "one", "restore", "--key-id", deep.key_id)
    assert run.code == 0, run.err
    assert (tmp_path / "one" / "private" / f"{deep.key_id}.key").is_file()
    # CI never gets a root key: named by ID, it is not found where CI may look
    root = kv("--config", cfg, "list", "--key-id", stored["root"].key_id)
    assert root.code == 3, root.err


def test_ci_without_a_teams_policy_is_told_the_exact_gun_form(
    kv: KV,
    team: Team,
    stored: dict[str, KeyAddress],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No teams policy: keyvault cannot know the principal is CI, OpenBao refuses the
    listing of the team's folder, and the error names the --gun form that works."""
    use(monkeypatch, team, team.token("ci"))
    cfg = config(home, team)
    cfg.write_text(
        "\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("policy = "))
        + "\n"
    )
    tag = str(stored["targets@3"].gun).rsplit("-", 1)[1]
    pattern = f"example.com/{team.name}/*{tag}*"
    run = kv(
        "--config",
        cfg,
        "--trust-dir",
        tmp_path / "wild",
        "restore",
        "--gun",
        pattern,
        "--role",
        "targets",
    )
    assert run.code == 0, run.err  # a GUN pattern never lists root/: it works as it is
    run = kv(
        "--config",
        cfg,
        "--trust-dir",
        tmp_path / "id",
        "restore",
        "--key-id",
        stored["targets@3"].key_id,
    )
    assert run.code == 4, run.err
    assert "does not let this principal list the team's folder" in run.err
    assert "--gun <registry>/<team>/<repository>" in run.err
    assert not (tmp_path / "id" / "private").exists()


def test_rewrap_says_so_when_the_store_refuses_the_trust_pins(
    kv: KV, team: Team, stored: dict[str, KeyAddress], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A principal OpenBao lets read a GUN's keys but not list its pins (the CI policy,
    with no teams policy to tell keyvault it is CI): rewrap moves the keys and says the
    pins were left out, exit 4, instead of skipping them in silence."""
    use(monkeypatch, team, team.token("ci"))
    cfg = config(home, team)
    cfg.write_text(
        "\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("policy = "))
        + "\n"
    )
    gun = str(stored["targets@3"].gun)
    run = kv(
        "--config",
        cfg,
        "--json",
        "rewrap",
        "--gun",
        gun,
        "--role",
        "targets",
        "--reseal",
        "--dry-run",
    )
    assert run.code == 4, run.err
    assert "trust pins not rewrapped" in run.err
    assert run.json()["pins_refused"]
    assert [k["kind"] for k in run.json()["keys"]] == ["key"]
