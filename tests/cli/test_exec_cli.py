"""``keyvault exec`` / ``fetch`` / ``wipe`` on the embedded default (file store + age).

The real-server scenarios (OpenBao JWT logins, notary publish, signals) are
in tests/ci/; these are the fast checks of selection, environment, markers
and refusals.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.host import tree

from cli.conftest import KV
from keyvault.ops.ci import FetchRequest, command_environment, parse_ttl
from keyvault.scratch import MARKER_NAME, Marker, WorkDir, process_start, wipe_tree
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "correct horse"
GUN = "example.com/team-a/app"
OTHER = "example.com/team-a/web"
DUMP_ENV = (
    "import json, os, sys; d = {k: os.environ.get(k) for k in sys.argv[2:]}; "
    "d['keys'] = sorted(os.listdir(os.path.join(os.environ['KEYVAULT_TRUST_DIR'], "
    "'private'))); json.dump(d, open(sys.argv[1], 'w'))"
)


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runtime"
    monkeypatch.setenv("KEYVAULT_TMPDIR", str(path))
    return path


@pytest.fixture
def keys(kv: KV, home: Path, base: Path) -> tuple[KeyFile, ...]:
    made = write_sample_trust_dir(
        home / ".docker" / "trust", {"root": PASS, "targets": PASS, "snapshot": PASS}, (GUN, OTHER)
    )
    assert kv("init").code == 0
    run = kv("backup")
    assert run.code == 0, run.err
    return made


def key_files(root: Path) -> list[str]:
    return [p for p, (mode, data) in tree(root).items() if data is not None and p.endswith(".key")]


def of(keys: tuple[KeyFile, ...], role: str, gun: str | None = GUN) -> KeyFile:
    (key,) = [k for k in keys if k.role == role and k.gun == gun]
    return key


def test_exec_gives_the_command_the_guns_keys_only_and_wipes(
    kv: KV, keys: tuple[KeyFile, ...], base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTARY_TARGETS_PASSPHRASE", "targets-secret")
    monkeypatch.setenv("NOTARY_ROOT_PASSPHRASE", "root-secret")
    out = tmp_path / "env.json"
    run = kv(
        "exec",
        "--gun",
        GUN,
        "--",
        sys.executable,
        "-c",
        DUMP_ENV,
        out,
        "DOCKER_CONFIG",
        "KEYVAULT_TRUST_DIR",
        "NOTARY_TARGETS_PASSPHRASE",
        "NOTARY_ROOT_PASSPHRASE",
    )
    assert run.code == 0, run.err
    seen = json.loads(out.read_text())
    assert Path(seen["KEYVAULT_TRUST_DIR"]) == Path(seen["DOCKER_CONFIG"]) / "trust"
    assert Path(seen["DOCKER_CONFIG"]).parent == base
    assert seen["NOTARY_TARGETS_PASSPHRASE"] == "targets-secret"
    assert seen["NOTARY_ROOT_PASSPHRASE"] is None  # no root key is there to use it
    assert sorted(seen["keys"]) == sorted(
        [of(keys, "targets").relpath, of(keys, "snapshot").relpath]
    )
    assert list(base.iterdir()) == []
    assert "targets-secret" not in run.out + run.err


def test_exit_code_of_the_command_is_passed_through(
    kv: KV, keys: tuple[KeyFile, ...], base: Path
) -> None:
    assert kv("exec", "--gun", GUN, "--", "sh", "-c", "exit 7").code == 7
    assert kv("exec", "--gun", GUN, "--", "true").code == 0
    assert list(base.iterdir()) == []


def test_command_not_found_is_127_and_wiped(kv: KV, keys: tuple[KeyFile, ...], base: Path) -> None:
    run = kv("exec", "--gun", GUN, "--", "/nonexistent/keyvault-no-such-command")
    assert run.code == 127 and "command not found" in run.err
    assert list(base.iterdir()) == []


def test_roles_named_are_the_only_ones_fetched(
    kv: KV, keys: tuple[KeyFile, ...], base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "env.json"
    run = kv("exec", "--gun", GUN, "--role", "targets", "--", sys.executable, "-c", DUMP_ENV, out)
    assert run.code == 0, run.err
    assert json.loads(out.read_text())["keys"] == [of(keys, "targets").relpath]
    assert kv("exec", "--gun", GUN, "--role", "targets/nope", "--", "true").code == 3


class _Listener:
    """A TCP port that counts connections: proves no request was sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def connections(self) -> int:
        """Every connection made so far: the accept thread is stopped first, then the
        kernel's backlog drained, so one the thread had not yet taken counts too."""
        self._stop.set()
        self._thread.join()
        self.sock.setblocking(False)
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.accepted
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    yield server
    server.close()


@pytest.mark.parametrize("verb", ["exec", "fetch"])
@pytest.mark.proves("T4")
def test_root_is_refused_before_any_backend_call(
    kv: KV, home: Path, base: Path, tmp_path: Path, listener: _Listener, verb: str
) -> None:
    """T4: the store and wrapper point at a live port; nothing connects, nothing is written."""
    config = home / "ci.toml"
    config.write_text(
        f'[keyvault]\nteam = "team-a"\nstore = "vault://secret/kv"\n'
        f'wrappers = ["transit://transit/team-a-k"]\n[vault]\n'
        f'address = "http://127.0.0.1:{listener.port}"\nauth = "jwt"\n'
        f'jwt_role = "ci-team-a"\ntimeout = 2\n'
    )
    into = tmp_path / "into"
    tail = ["--", "true"] if verb == "exec" else ["--into", str(into)]
    run = kv("--config", config, verb, "--gun", GUN, "--role", "targets", "--role", "root", *tail)
    assert run.code == 4, run.err
    assert "root keys are never fetched" in run.err
    assert listener.connections() == 0
    assert not base.exists() or list(base.iterdir()) == []
    assert not into.exists()
    audit = (home / ".local" / "state" / "keyvault" / "audit.log").read_text()
    assert '"outcome":"refused"' in audit and '"action":"fetch"' in audit


def test_globs_and_missing_gun_are_usage_errors(kv: KV, keys: tuple[KeyFile, ...]) -> None:
    assert kv("exec", "--gun", "example.com/*", "--", "true").code == 2
    assert kv("exec", "--", "true").code == 2
    assert kv("exec", "--gun", GUN).code == 2


def test_unknown_gun_is_not_found_and_leaves_nothing(
    kv: KV, keys: tuple[KeyFile, ...], base: Path
) -> None:
    run = kv("exec", "--gun", "example.com/team-a/none", "--", "true")
    assert run.code == 3, run.err
    assert list(base.iterdir()) == []


def test_fetch_into_then_wipe(kv: KV, keys: tuple[KeyFile, ...], tmp_path: Path) -> None:
    into = tmp_path / "job"
    run = kv("fetch", "--gun", GUN, "--role", "targets", "--into", into)
    assert run.code == 0, run.err
    assert run.out.strip() == str(into / "trust")
    assert f"keyvault wipe {into}" in run.err
    assert stat.S_IMODE(into.stat().st_mode) == 0o700
    target = of(keys, "targets")
    assert (into / "trust" / "private" / target.relpath).read_bytes() == target.data
    assert key_files(into) == [f"trust/private/{target.relpath}"]
    # wipe accepts the directory or its trust/
    wiped = kv("wipe", into / "trust")
    assert wiped.code == 0, wiped.err
    assert not into.exists()


def test_fetch_refuses_a_non_empty_directory(
    kv: KV, keys: tuple[KeyFile, ...], tmp_path: Path
) -> None:
    into = tmp_path / "busy"
    into.mkdir()
    (into / "x").write_text("mine")
    assert kv("fetch", "--gun", GUN, "--into", into).code == 7
    assert (into / "x").read_text() == "mine"


def test_wipe_refuses_directories_without_the_marker(kv: KV, tmp_path: Path) -> None:
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "data.key").write_text("keep me")
    run = kv("wipe", victim)
    assert run.code == 2 and "no keyvault marker" in run.err
    assert (victim / "data.key").read_text() == "keep me"
    # a forged marker inside is not enough if it does not parse as ours
    (victim / MARKER_NAME).write_text('{"format": "something-else"}')
    assert kv("wipe", victim).code == 2
    assert kv("wipe").code == 2
    assert kv("wipe", victim, "--stale").code == 2


def test_wipe_of_a_directory_that_does_not_exist_is_nothing_to_wipe(kv: KV, tmp_path: Path) -> None:
    """The documented always-run cleanup step after a fetch that failed (and made nothing)."""
    run = kv("--json", "wipe", tmp_path / "never-fetched")
    assert run.code == 0, run.err
    assert run.json() == {"wiped": []}
    run = kv("wipe", tmp_path / "never-fetched")
    assert run.code == 0 and "nothing to wipe" in run.out


def test_wipe_expired_removes_only_expired_fetches(
    kv: KV, keys: tuple[KeyFile, ...], tmp_path: Path
) -> None:
    short, long = tmp_path / "short", tmp_path / "long"
    assert kv("fetch", "--gun", GUN, "--into", short, "--ttl", "1s").code == 0
    assert kv("fetch", "--gun", GUN, "--into", long, "--ttl", "1h").code == 0
    deadline = time.monotonic() + 30  # the 1 s TTL, on a busy machine
    while time.monotonic() < deadline:
        run = kv("--json", "wipe", "--expired")
        assert run.code == 0, run.err
        if run.json()["wiped"]:
            break
        time.sleep(0.2)
    assert run.json()["wiped"] == [str(short.resolve())]
    assert not short.exists() and long.exists()
    assert kv("wipe", long).code == 0


def test_stale_exec_directory_is_wiped_by_the_next_run(
    kv: KV, keys: tuple[KeyFile, ...], base: Path
) -> None:
    """A run that died (its PID is gone) left its keys behind: the next exec wipes them."""
    base.mkdir(parents=True, exist_ok=True)
    dead = WorkDir.create_in(base, "exec")
    (dead.trust_dir / "private").mkdir(parents=True)
    (dead.trust_dir / "private" / "leftover.key").write_bytes(b"secret bytes")
    forged = Marker(
        "exec", "x" * 16, 2**22 + 12345, None, dead.marker.host, os.getuid(), time.time()
    )
    (dead.path / MARKER_NAME).write_bytes(forged.to_bytes())
    alive = WorkDir.create_in(base, "exec")  # this process: alive, same start time
    run = kv("exec", "--gun", GUN, "--", "true")
    assert run.code == 0, run.err
    assert "earlier run that died" in run.err
    assert not dead.path.exists() and alive.path.exists()
    wipe_tree(alive.path)


def test_reused_pid_counts_as_dead() -> None:
    mine = process_start(os.getpid())
    assert mine is not None
    marker = Marker(
        "exec", "i", os.getpid(), str(int(mine) + 1), socket.gethostname(), os.getuid(), time.time()
    )
    assert marker.owner_gone()
    same = Marker("exec", "i", os.getpid(), mine, socket.gethostname(), os.getuid(), time.time())
    assert not same.owner_gone()
    other_host = Marker("exec", "i", 2**22 + 7, None, "another-host", os.getuid(), time.time())
    assert not other_host.owner_gone()


def test_wipe_overwrites_and_handles_read_only_and_links(tmp_path: Path) -> None:
    work = WorkDir.create_in(tmp_path, "exec")
    private = work.trust_dir / "private"
    private.mkdir(parents=True)
    key = private / "a.key"
    key.write_bytes(b"K" * 300)
    key.chmod(0o400)
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    (private / "link").symlink_to(outside)
    (private / "dirlink").symlink_to(tmp_path)
    held = os.open(key, os.O_RDONLY)  # a second view of the inode: sees the zeros
    try:
        work.wipe()
        assert os.pread(held, 300, 0) == bytes(300)
    finally:
        os.close(held)
    assert not work.path.exists()
    assert outside.read_text() == "untouched"


@pytest.mark.proves("T7")
def test_command_environment_drops_keyvault_credentials() -> None:
    work = WorkDir(Path("/x/keyvault-exec-1-a"), Marker("exec", "i", 1, None, "h", 0, 0.0))
    env = {
        "CI_JOB_JWT": "eyJ.secret.jwt",
        "KEYVAULT_VAULT_SECRET_ID": "s",
        "PATH": "/bin",
        "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE": "repo-pass",
        "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE": "root",
        "NOTARY_TARGETS_PASSPHRASE": "t",
    }
    child = command_environment(env, {"vault": {"auth": "jwt", "jwt_env": "CI_JOB_JWT"}}, work)
    assert "CI_JOB_JWT" not in child and "KEYVAULT_VAULT_SECRET_ID" not in child
    assert "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE" not in child
    assert child["NOTARY_TARGETS_PASSPHRASE"] == "t"  # set explicitly: kept
    assert child["NOTARY_DELEGATION_PASSPHRASE"] == "repo-pass"
    assert child["DOCKER_CONFIG"] == "/x/keyvault-exec-1-a"
    assert child["KEYVAULT_TRUST_DIR"] == "/x/keyvault-exec-1-a/trust"


@pytest.mark.proves("T7")
def test_command_environment_drops_the_vault_token_and_pin_keyvault_could_use() -> None:
    work = WorkDir(Path("/x/keyvault-exec-1-a"), Marker("exec", "i", 1, None, "h", 0, 0.0))
    env = {
        "VAULT_TOKEN": "hvs.secret",
        "KEYVAULT_PKCS11_PIN": "1234",
        "PATH": "/bin",
        "KEYVAULT_WRAPPERS": "pkcs11:token=t;object=k?pin-value=1234",
        "KEYVAULT_TEAM": "a",
    }
    child = command_environment(env, {}, work)
    assert "VAULT_TOKEN" not in child and "KEYVAULT_PKCS11_PIN" not in child
    assert "KEYVAULT_WRAPPERS" not in child  # a setting that carries a PIN
    assert child["PATH"] == "/bin" and child["KEYVAULT_TEAM"] == "a"
    # Whether or not keyvault used Vault this time: the job names it to get it.
    assert command_environment(env, {}, work, pass_env=["VAULT_TOKEN"])["VAULT_TOKEN"] == (
        "hvs.secret"
    )


#: What a CI runner's environment may hold for keyvault: every kind of credential it reads.
KEYVAULT_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID0001",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-9f8e7d",
    "AWS_SESSION_TOKEN": "aws-session-token-6c5b",
    "AWS_SECURITY_TOKEN": "aws-security-4a3b",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks/token",
    "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/keyvault-ci",
    "AWS_ROLE_SESSION_NAME": "keyvault-ci-session",
    "AWS_PROFILE": "keyvault-profile",
    "AWS_DEFAULT_PROFILE": "keyvault-default-profile",
    "AWS_SHARED_CREDENTIALS_FILE": "/ci/aws/credentials",
    "AWS_CONFIG_FILE": "/ci/aws/config",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-auth-2b1a",
    "VAULT_TOKEN": "hvs.vault-token-0f1e",
    "KEYVAULT_VAULT_SECRET_ID": "approle-secret-3d2c",
    "KEYVAULT_VAULT_ROLE_ID": "approle-role-5e4d",
    "KEYVAULT_VAULT_JWT": "eyJ.jwt.token",
    "KEYVAULT_PKCS11_PIN": "hsm-pin-7a6b",
    "KEYVAULT_SEALING_KEY": "/ci/sealer.key",
    "NOTARY_ROOT_PASSPHRASE": "root-pass-8c7d",
}


@pytest.mark.proves("T7")
def test_exec_withholds_every_keyvault_credential_and_says_which(
    kv: KV, keys: tuple[KeyFile, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in KEYVAULT_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # configuration, not a credential
    out = tmp_path / "env.json"
    run = kv(
        "exec",
        "--gun",
        GUN,
        "--",
        sys.executable,
        "-c",
        DUMP_ENV,
        out,
        *KEYVAULT_CREDENTIALS,
        "AWS_REGION",
    )
    assert run.code == 0, run.err
    seen = json.loads(out.read_text())
    assert {name: seen[name] for name in KEYVAULT_CREDENTIALS} == dict.fromkeys(
        KEYVAULT_CREDENTIALS
    )
    assert seen["AWS_REGION"] == "eu-west-1"
    # Nothing silently: the names (never the values) are on stderr, with the way out.
    assert all(name in run.err for name in KEYVAULT_CREDENTIALS) and "--pass-env" in run.err
    assert not any(
        value in run.out + run.err for value in KEYVAULT_CREDENTIALS.values() if "/" not in value
    )


def test_exec_passes_only_what_pass_env_names(
    kv: KV, keys: tuple[KeyFile, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in KEYVAULT_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env.json"
    run = kv(
        "exec",
        "--gun",
        GUN,
        "--pass-env",
        "AWS_PROFILE",
        "--pass-env",
        "AWS_CONFIG_FILE",
        "--pass-env",
        "NOT_SET_ANYWHERE",
        "--",
        sys.executable,
        "-c",
        DUMP_ENV,
        out,
        *KEYVAULT_CREDENTIALS,
    )
    assert run.code == 0, run.err
    seen = {k: v for k, v in json.loads(out.read_text()).items() if v is not None}
    assert seen.pop("keys")
    assert seen == {"AWS_PROFILE": "keyvault-profile", "AWS_CONFIG_FILE": "/ci/aws/config"}
    assert "--pass-env NOT_SET_ANYWHERE: not set" in run.err
    withheld = run.err.split("(keyvault's credentials): ", 1)[1].split(";", 1)[0]
    assert "AWS_PROFILE" not in withheld.split(", ") and "AWS_ACCESS_KEY_ID" in withheld


@pytest.mark.parametrize("name", ["AWS_PROFILE=x", "", "1ABC", "A B"])
def test_pass_env_takes_names_only(
    kv: KV, keys: tuple[KeyFile, ...], base: Path, name: str
) -> None:
    run = kv("exec", "--gun", GUN, "--pass-env", name, "--", "true")
    assert run.code == 2 and "is not an environment variable name" in run.err
    assert not base.exists() or list(base.iterdir()) == []


def test_request_and_ttl_parsing() -> None:
    assert FetchRequest.build(GUN, None).roles == ()
    assert FetchRequest.build(GUN, ["targets", "targets/releases"]).roles == (
        "targets",
        "targets/releases",
    )
    from keyvault.errors import AccessDeniedError, UsageError

    with pytest.raises(AccessDeniedError):
        FetchRequest.build(GUN, ["targets", "root"])
    with pytest.raises(UsageError):
        FetchRequest.build("../x", None)
    assert parse_ttl("15m") == 900 and parse_ttl("1h30m") == 5400 and parse_ttl("90s") == 90
    for bad in ("", "0s", "25h", "15", "m", "1d"):
        with pytest.raises(UsageError):
            parse_ttl(bad)


@pytest.mark.proves("T3", "T4")
def test_the_teams_policy_decides_who_may_fetch(
    kv: KV,
    keys: tuple[KeyFile, ...],
    home: Path,
    base: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With a policy, a team's CI principal fetches; anyone else is refused before a read."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\n\n[teams.default]\nguns = ["example.com/team-a/*"]\n'
        'members = ["local:alice"]\nci = ["local:ci-bot"]\n'
    )
    monkeypatch.setenv("KEYVAULT_POLICY", str(policy))
    assert kv("--as", "local:ci-bot", "exec", "--gun", GUN, "--", "true").code == 0
    refused = kv("--as", "local:mallory", "exec", "--gun", GUN, "--", "true")
    assert refused.code == 4 and "local:mallory" in refused.err
    assert key_files(base) == []
    records = kv("--json", "audit", "show", "--action", "fetch").json()["records"]
    assert [r["outcome"] for r in records][-2:] == ["ok", "refused"]


def test_the_policy_also_guards_list_and_verify(
    kv: KV, keys: tuple[KeyFile, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\n\n[teams.default]\nguns = ["example.com/team-a/*"]\n'
        'members = ["local:alice"]\nci = ["local:ci-bot"]\n'
    )
    monkeypatch.setenv("KEYVAULT_POLICY", str(policy))
    assert kv("--as", "local:alice", "list").code == 0
    for args in (["list"], ["verify", "--all"], ["versions", "--all"]):
        run = kv("--as", "local:mallory", *args)
        assert run.code == 4 and "local:mallory" in run.err, args
    records = kv("--json", "audit", "show").json()["records"]
    refused = [r for r in records if r["outcome"] == "refused"]
    assert len(refused) == 3  # each refusal recorded once, with its rule
    assert all("mallory" in r["detail"] for r in refused)


def test_wipe_never_zeroes_a_hard_linked_file(
    kv: KV, keys: tuple[KeyFile, ...], base: Path, tmp_path: Path
) -> None:
    """A command that hard-links an outside file into the trust dir: the wipe unlinks it."""
    import os

    precious = base.parent / "precious.txt"  # same file system as the run's directory
    precious.write_bytes(b"keep me\n")
    script = (
        f"import os; os.link({str(precious)!r}, "
        "os.path.join(os.environ['KEYVAULT_TRUST_DIR'], 'private', 'linked.key'))"
    )
    import sys

    assert kv("exec", "--gun", GUN, "--", sys.executable, "-c", script).code == 0
    assert precious.read_bytes() == b"keep me\n" and os.stat(precious).st_nlink == 1
