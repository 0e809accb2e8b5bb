"""A CI job signs with ``keyvault exec`` on real OpenBao + notary-server, and leaves nothing.

Covers issue 9: the publish succeeds with only the keys exec fetched; no key
file remains anywhere the job could write; root and another team's GUN are
refused (exit 4) with nothing written; SIGTERM mid-command still wipes; a
SIGKILLed run's directory is wiped by the next run; the exit code passes
through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from e2e.machines import NotaryClient, expected, release
from fixtures.servers import wait_for

from ci.conftest import CiLab, Job, job_script, no_leftovers


def wait_for_line(path: Path, proc: subprocess.Popen[str], seconds: float = 30) -> str:
    """The first line the command wrote to ``path`` (it must still be running)."""

    def written() -> str | None:
        assert proc.poll() is None, "exec ended early"
        text = path.read_text() if path.exists() else ""
        return text.strip() if text.endswith("\n") else None

    return str(wait_for(written, f"{path} to be written", seconds, 0.05))


def test_ci_job_publishes_with_fetched_keys_and_leaves_nothing(
    ci_lab: CiLab, tmp_path: Path
) -> None:
    job = ci_lab.job("publish")
    config = ci_lab.config("publish")
    payload = job.home / "v2.txt"
    payload.write_bytes(release("v2"))
    script = job_script(ci_lab, job.home)
    jwt = ci_lab.bao.mint_jwt(team="team-b")
    run = job.run(config, jwt, "exec", "--gun", ci_lab.gun, "--", script, ci_lab.gun, "v2", payload)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Successfully published changes for repository {ci_lab.gun}" in run.stdout
    assert "2 key(s)" in run.stderr  # targets + snapshot (notary init keeps it on the client)
    assert jwt not in run.stdout + run.stderr
    no_leftovers(job)
    # what the server now serves, read by a fresh client
    reader = NotaryClient(ci_lab.notary, ci_lab.server, tmp_path / "reader")
    assert reader.targets(ci_lab.gun)["v2"] == expected("v2")
    # the fetch is in the job's audit log: who, which GUN, which roles, which keys
    audit = (job.home / ".local" / "state" / "keyvault" / "audit.log").read_text()
    (record,) = [
        json.loads(line) for line in audit.splitlines() if json.loads(line)["action"] == "fetch"
    ]
    assert record["outcome"] == "ok" and record["team"] == "team-b"
    assert {k["key_id"] for k in record["keys"]} == {
        ci_lab.key_ids["targets"],
        ci_lab.key_ids["snapshot"],
    }
    assert f"gun={ci_lab.gun}" in record["detail"]
    assert "vault-jwt:ci-team-b/repo:example/app:ref:main" in record["detail"]


def test_delegation_named_with_role_signs_as_the_delegation(ci_lab: CiLab, tmp_path: Path) -> None:
    job = ci_lab.job("delegation")
    payload = job.home / "v3.txt"
    payload.write_bytes(release("v3"))
    script = job_script(ci_lab, job.home)
    run = job.run(
        ci_lab.config("delegation"),
        ci_lab.bao.mint_jwt(team="team-b"),
        "exec",
        "--gun",
        ci_lab.gun,
        "--role",
        "targets",
        "--role",
        "snapshot",
        "--role",
        "targets/releases",
        "--",
        script,
        ci_lab.gun,
        "v3",
        payload,
        "--roles=targets/releases",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    no_leftovers(job)
    reader = NotaryClient(ci_lab.notary, ci_lab.server, tmp_path / "reader")
    assert reader.targets(ci_lab.gun)["v3"] == expected("v3", "targets/releases")


@pytest.mark.proves("T4")
def test_root_is_refused_with_nothing_written(ci_lab: CiLab) -> None:
    job = ci_lab.job("root")
    for args in (
        ("exec", "--gun", ci_lab.gun, "--role", "root", "--", "true"),
        ("fetch", "--gun", ci_lab.gun, "--role", "root", "--into", job.home / "x"),
    ):
        run = job.run(ci_lab.config("root"), ci_lab.bao.mint_jwt(team="team-b"), *args)
        assert run.returncode == 4, run.stderr
        assert "root keys are never fetched" in run.stderr
    assert not (job.home / "x").exists()
    no_leftovers(job)


@pytest.mark.proves("T3")
def test_another_teams_gun_is_refused_by_openbao(ci_lab: CiLab) -> None:
    """keyvault's own policy is not wired in yet: OpenBao's ACL refuses team a's prefix."""
    job = ci_lab.job("other-team")
    run = job.run(
        ci_lab.config("other", team="team-a"),
        ci_lab.bao.mint_jwt(team="team-b"),
        "exec",
        "--gun",
        ci_lab.other_gun,
        "--",
        "true",
    )
    assert run.returncode == 4, run.stderr
    assert "permission denied" in run.stderr and "team-a" in run.stderr
    no_leftovers(job)
    # and team a's JWT cannot log in at team b's role
    refused = job.run(
        ci_lab.config("wrong-role"),
        ci_lab.bao.mint_jwt(team="team-a"),
        "exec",
        "--gun",
        ci_lab.gun,
        "--",
        "true",
    )
    assert refused.returncode == 4 and "refused the JWT login" in refused.stderr
    no_leftovers(job)


def test_exit_code_passes_through(ci_lab: CiLab) -> None:
    job = ci_lab.job("exit-code")
    run = job.run(
        ci_lab.config("exit"),
        ci_lab.bao.mint_jwt(team="team-b"),
        "exec",
        "--gun",
        ci_lab.gun,
        "--",
        "sh",
        "-c",
        "exit 7",
    )
    assert run.returncode == 7, run.stderr
    no_leftovers(job)


def _hold(job: Job, lab: CiLab) -> tuple[subprocess.Popen[str], Path, Path]:
    """Start an exec whose command records its trust dir and PID, then sleeps."""
    seen, pid_file = job.home / "trust-dir.txt", job.home / "child.pid"
    proc = job.start(
        lab.config(job.home.name),
        lab.bao.mint_jwt(team="team-b"),
        "exec",
        "--gun",
        lab.gun,
        "--",
        "sh",
        "-c",
        f'echo $$ > {pid_file}; echo "$KEYVAULT_TRUST_DIR" > {seen}; exec sleep 60',
    )
    return proc, seen, pid_file


def _gone(pid: int) -> bool:
    def exited() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    return bool(wait_for(exited, f"process {pid} to exit", 10, 0.05))


def test_sigterm_mid_command_forwards_and_wipes(ci_lab: CiLab) -> None:
    job = ci_lab.job("sigterm")
    proc, seen, pid_file = _hold(job, ci_lab)
    try:
        trust = Path(wait_for_line(seen, proc))
        assert any((trust / "private").glob("*.key"))  # the keys are there while it runs
        child = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert _gone(child)
    assert not trust.parent.exists()
    no_leftovers(job)


def test_sigkilled_run_is_wiped_by_the_next_run(ci_lab: CiLab) -> None:
    job = ci_lab.job("sigkill")
    proc, seen, _ = _hold(job, ci_lab)
    try:
        trust = Path(wait_for_line(seen, proc))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CI runner kills them all
        proc.wait(timeout=10)
    assert any((trust / "private").glob("*.key"))  # left behind by the kill
    run = job.run(
        ci_lab.config("sigkill-next"),
        ci_lab.bao.mint_jwt(team="team-b"),
        "exec",
        "--gun",
        ci_lab.gun,
        "--",
        "true",
    )
    assert run.returncode == 0, run.stderr
    assert f"earlier run that died: {trust.parent}" in run.stderr
    no_leftovers(job)


def test_fetch_into_then_wipe_leaves_nothing(ci_lab: CiLab) -> None:
    job = ci_lab.job("fetch")
    into = job.home / "keys"
    config = ci_lab.config("fetch")
    run = job.run(
        config,
        ci_lab.bao.mint_jwt(team="team-b"),
        "--json",
        "fetch",
        "--gun",
        ci_lab.gun,
        "--role",
        "targets",
        "--into",
        into,
        "--ttl",
        "15m",
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["trust_dir"] == str(into / "trust")
    assert [k["key_id"] for k in doc["keys"]] == [ci_lab.key_ids["targets"]]
    assert (into / "trust" / "private" / f"{ci_lab.key_ids['targets']}.key").is_file()
    wiped = job.run(config, "", "wipe", into)
    assert wiped.returncode == 0, wiped.stderr
    no_leftovers(job)
