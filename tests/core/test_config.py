"""Configuration: defaults < TOML file < environment; strict schema (B16, B17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyvault.config import default_trust_dir, load_config, render_config
from keyvault.errors import InvalidInputError, NotFoundError, UsageError


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    values = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def test_defaults_without_a_file(env: dict[str, str]) -> None:
    config = load_config(None, env)
    assert config.source is None and config.store is None and config.team == "default"
    assert config.trust_dir == Path(env["HOME"]) / ".docker" / "trust"
    with pytest.raises(NotFoundError, match="no store is configured"):
        config.require_store()


def test_docker_config_moves_the_trust_dir(env: dict[str, str]) -> None:
    assert default_trust_dir({**env, "DOCKER_CONFIG": "/x/docker"}) == Path("/x/docker/trust")


def test_file_then_env_precedence(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        render_config(
            team="team-a",
            store="file:///s",
            wrappers=["age1abc"],
            identity_file=tmp_path / "id.txt",
        )
    )
    config = load_config(path, env)
    assert (config.team, config.store, config.wrappers) == ("team-a", "file:///s", ("age1abc",))
    assert config.identity_files == (tmp_path / "id.txt",)
    config = load_config(
        path,
        {
            **env,
            "KEYVAULT_TEAM": "team-b",
            "KEYVAULT_STORE": "file:///t",
            "KEYVAULT_WRAPPERS": "age1x, passphrase:",
        },
    )
    assert (config.team, config.store, config.wrappers) == (
        "team-b",
        "file:///t",
        ("age1x", "passphrase:"),
    )


@pytest.mark.proves("B16")
def test_syntax_error_names_the_line(env: dict[str, str], tmp_path: Path) -> None:
    """B16."""
    path = tmp_path / "c.toml"
    path.write_text('[keyvault]\nteam = "a"\nstore = \n')
    with pytest.raises(InvalidInputError, match="line 3"):
        load_config(path, env)


@pytest.mark.parametrize(
    "body,fragment",
    [
        ('[keyvault]\nstroe = "file:///x"\n', "unknown key 'stroe'"),
        ("[nope]\nx = 1\n", r"unknown section \[nope\]"),
        ('[keyvault]\nwrappers = "age1x"\n', "wrong type"),
        ("[passphrase]\nscrypt_n = true\n", "wrong type"),
    ],
)
@pytest.mark.proves("B17")
def test_unknown_keys_and_wrong_types(
    env: dict[str, str], tmp_path: Path, body: str, fragment: str
) -> None:
    """B17."""
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(InvalidInputError, match=fragment):
        load_config(path, env)


def test_explicit_missing_config_is_not_found(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env)


def test_invalid_team_in_config(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[keyvault]\nteam = "a/b"\n')
    with pytest.raises(UsageError, match="invalid team name"):
        load_config(path, env)


def test_config_path_from_env(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[keyvault]\nteam = "from-env"\n')
    assert load_config(None, {**env, "KEYVAULT_CONFIG": str(path)}).team == "from-env"


def test_relative_paths_resolve_against_the_config_files_directory(
    env: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    path = directory / "kv.toml"
    path.write_text(
        '[keyvault]\nstore = "file:///s"\ntrust_dir = "trust"\npolicy = "~/p.toml"\n'
        '[recovery]\nidentity_file = "id.txt"\nidentity_files = ["../more.txt"]\n'
        '[sealing]\nkey = "keys/sealer.key"\n[vault]\ntoken_file = "token"\n'
    )
    config = load_config(path, env)  # the working directory is not the file's
    assert config.trust_dir == directory / "trust"
    assert config.policy == Path(env["HOME"]) / "p.toml"
    assert config.identity_files == (directory / "id.txt", directory / ".." / "more.txt")
    assert config.sealing_key == str(directory / "keys" / "sealer.key")
    assert config.settings["vault"]["token_file"] == str(directory / "token")


def test_absolute_paths_and_uris_are_kept_as_given(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[keyvault]\nstore = "file:///old/home/.local/share/keyvault/store"\n'
        '[recovery]\nidentity_file = "/old/home/.config/keyvault/id.txt"\n'
        '[sealing]\nkey = "transit://transit/sealer"\n'
    )
    config = load_config(path, env)
    assert config.store == "file:///old/home/.local/share/keyvault/store"
    assert config.identity_files == (Path("/old/home/.config/keyvault/id.txt"),)
    assert config.sealing_key == "transit://transit/sealer"


def test_init_leaves_out_the_defaults_so_the_file_works_under_another_home(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = load_config(None, env).paths
    text = render_config(
        team="t",
        store=paths.default_store.as_uri(),
        wrappers=["age1abc"],
        identity_file=paths.default_identity,
        defaults=paths,
    )
    assert env["HOME"] not in text
    copied = tmp_path / "copied.toml"
    copied.write_text(text)
    other = tmp_path / "y" / "other-b"
    moved = {
        "HOME": str(other),
        "XDG_CONFIG_HOME": str(other / ".config"),
        "XDG_DATA_HOME": str(other / ".local/share"),
    }
    for key, value in moved.items():
        monkeypatch.setenv(key, value)
    identity = other / ".config" / "keyvault" / "recovery-identity.txt"
    identity.parent.mkdir(parents=True)
    identity.write_text("# rebuilt from shares\n")
    config = load_config(copied, moved)
    assert config.store == (other / ".local/share/keyvault/store").as_uri()
    assert config.identity_files == (identity,)


def test_a_config_file_without_a_store_means_the_default_store(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[keyvault]\nteam = "a"\n')
    config = load_config(path, env)
    assert config.store == (Path(env["XDG_DATA_HOME"]) / "keyvault" / "store").as_uri()


def test_an_age_config_without_identity_file_names_the_default_even_when_missing(
    env: dict[str, str], tmp_path: Path
) -> None:
    """As an older init's explicit line did: the restore then says which file it needs."""
    path = tmp_path / "c.toml"
    path.write_text('[keyvault]\nwrappers = ["age1abc"]\n')
    default = Path(env["XDG_CONFIG_HOME"]) / "keyvault" / "recovery-identity.txt"
    assert load_config(path, env).identity_files == (default,)
    path.write_text('[keyvault]\nwrappers = ["awskms:///alias/k"]\n')
    assert load_config(path, env).identity_files == ()


def test_the_notary_clients_trust_dir_is_the_default_without_docker_config(
    env: dict[str, str], tmp_path: Path
) -> None:
    notary = Path(env["HOME"]) / ".notary"
    notary.mkdir(parents=True)
    (notary / "config.json").write_text('{"trust_dir": "~/.notary-keys"}')
    assert load_config(None, env).trust_dir == Path(env["HOME"]) / ".notary-keys"
    docker = {**env, "DOCKER_CONFIG": str(tmp_path / "dc")}
    assert load_config(None, docker).trust_dir == tmp_path / "dc" / "trust"
    explicit = {**env, "KEYVAULT_TRUST_DIR": str(tmp_path / "mine")}
    assert load_config(None, explicit).trust_dir == tmp_path / "mine"
