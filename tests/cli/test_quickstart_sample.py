"""quickstart's sample, whose passphrase is public, can be removed the way quickstart says."""

from __future__ import annotations

import re
from pathlib import Path

from fixtures.host import tree

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir


def test_the_printed_command_removes_the_sample_and_nothing_else(kv: KV, home: Path) -> None:
    first = kv("quickstart")
    assert first.code == 0, first.err
    sample = home / ".local" / "share" / "keyvault" / "sample-trust"
    assert len(list((sample / "private").iterdir())) == 5
    (command,) = re.findall(r"'(keyvault quickstart [^']*)'", first.err)

    # The user's real keys arrive, are backed up, and the sample is removed as told.
    trust = home / ".docker" / "trust"
    write_sample_trust_dir(trust, dict.fromkeys(("root", "targets", "snapshot"), "real one"),
                           ("registry.example.com/real/app",))
    assert kv("backup").code == 0
    config_dir = home / ".config" / "keyvault"
    store = home / ".local" / "share" / "keyvault" / "store"
    kept = {"trust": tree(trust), "config": tree(config_dir)}
    run = kv(*command.split()[1:])
    assert run.code == 0, run.err
    assert f"Wiped the sample trust directory {sample}" in run.out
    assert not sample.exists()
    assert {"trust": tree(trust), "config": tree(config_dir)} == kept
    restored = home / "restored"
    assert kv("--trust-dir", restored, "restore", "--all").code == 0
    assert tree(restored / "private") == tree(trust / "private")
    assert store.is_dir()
    again = kv("--json", *command.split()[1:])  # nothing left to remove is not an error
    assert again.code == 0 and again.json() == {"removed": None}


def test_the_quickstart_page_names_the_same_command() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "quickstart.md").read_text()
    from keyvault.ops.quickstart import REMOVE_SAMPLE

    assert f"`{REMOVE_SAMPLE}`" in page
