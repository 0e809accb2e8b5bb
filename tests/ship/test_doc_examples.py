"""Every shell example in the top-level pages and docs/ runs, as a user would type it (issue 18).

The harness collects every command block of every page (README.md, CONTRIBUTING.md,
CHANGELOG.md, SECURITY.md and any other ``*.md`` at the top, and ``docs/**/*.md``;
fences ``sh``, ``bash``,
``shell``, ``console``, ``zsh`` fences, and a fence of any language with
``$ `` prompt lines) and runs a page's blocks in order, in one sandbox per
page: a fresh HOME under tmp with its XDG directories, a trust directory
of keys made by the real ``notary`` binary in ``~/.docker/trust``, their
passphrases in ``NOTARY_*_PASSPHRASE``, and ``keyvault`` (this checkout,
``python -m keyvault``) on PATH. The blocks of a page share one shell
session: a block starts with the variables and directory the one before
left. README.md gets no ``keyvault`` on PATH: its set-up command leaves it
in ``.venv/bin`` and its "Use" section's own ``export PATH=...`` line puts
it there, as for a user.

The markers a page may hold (docs/testing.md, "Shell examples in the docs"):

- ``<!-- illustrative: REASON -->`` on the line before a fence: not run;
  the reason is required and listed by ``test_illustrative_blocks_say_why``;
- ``<!-- doctest-setup: COMMANDS -->``: hidden commands run at that point of
  the page (state a page assumes, e.g. keys already backed up);
- ``<!-- doctest-sandbox: clone -->`` anywhere on a page: its work directory is a
  copy of this checkout, a git repository, with ``.venv`` the test interpreter's
  virtualenv (a contributor's page: CONTRIBUTING.md, docs/releasing.md);
- ``<!-- doctest: exit N -->`` on the line before a fence: the block must
  end with exit code N (it stops at its first failing command);
- a transcript's ``$ echo $?`` line gives the exit code of the command before it.

Placeholders the docs use for values that differ per machine are replaced
by the sandbox's (``PLACEHOLDERS``), so ``--key-id 1a2b3c`` names a real key.
New pages are picked up by the glob: their examples run after a merge.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixtures.components import find_tool
from notarykit import Notary, fresh_ec_pem, passphrase_env

REPO = Path(__file__).resolve().parents[2]
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
#: The GUNs the pages use in their examples; the sandbox's trust dir holds keys for both.
GUNS = ("example.com/team/app", "registry.example.com/team/app")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
ILLUSTRATIVE = re.compile(r"^\s*<!--\s*illustrative:(?P<reason>.*?)-->\s*$")
EXIT = re.compile(r"^\s*<!--\s*doctest:\s*exit\s+(?P<code>\d+)\s*-->\s*$")
SETUP = re.compile(r"^\s*<!--\s*doctest-setup:(?P<code>.*?)-->\s*$")
#: A contributor's page: its blocks run in a copy of this checkout (``_clone_checkout``).
CLONE = re.compile(r"^\s*<!--\s*doctest-sandbox:\s*clone\s*-->\s*$", re.MULTILINE)
BLOCK_TIMEOUT = 180


def pages() -> list[Path]:
    """Every top-level page (README.md, CONTRIBUTING.md...) and every page under docs/.

    New pages are included automatically, at the top as under docs/.
    """
    return [*sorted(REPO.glob("*.md")), *sorted((REPO / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One command block (or hidden setup) of a page, in page order."""

    page: str  # relative to the repository
    line: int  # the fence's line, 1-based
    code: str
    illustrative: str | None = None  # the reason, if marked
    expect: int = 0
    setup: bool = False
    transcript: bool = False

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}" + (" (setup)" if self.setup else "")


def _marker_line(lines: list[str], fence_index: int) -> str:
    """The nearest non-blank line above a fence (where its marker goes)."""
    i = fence_index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    return lines[i] if i >= 0 else ""


def collect(path: Path) -> list[Block]:
    """The command blocks and setup comments of one page."""
    page = str(path.relative_to(REPO))
    lines = path.read_text().split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        setup = SETUP.match(lines[i])
        if setup:
            blocks.append(Block(page, i + 1, setup.group("code").strip(), setup=True))
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        language = (m.group("info").split() or [""])[0].lower()
        end = i + 1
        while end < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence)}[ \t]*$", lines[end]):
            end += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line.lstrip()
            for line in lines[i + 1 : end]
        ]
        transcript = any(line.startswith("$ ") for line in body)
        if language in SHELLS or transcript:
            marker = _marker_line(lines, i)
            reason = ILLUSTRATIVE.match(marker)
            exit_code = EXIT.match(marker)
            blocks.append(
                Block(
                    page,
                    i + 1,
                    "\n".join(body),
                    reason.group("reason").strip() if reason else None,
                    int(exit_code.group("code")) if exit_code else 0,
                    transcript=transcript,
                )
            )
        i = end + 1
    return blocks


ALL = [b for p in pages() for b in collect(p)]
RUNNABLE = [b for b in ALL if b.illustrative is None]


def transcript_steps(code: str) -> list[tuple[str, int]]:
    """A transcript's commands, each with its exit code (0, or what ``echo $?`` shows)."""
    steps: list[tuple[str, int]] = []
    lines = code.split("\n")
    for n, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        command = line[2:]
        if command.strip() == "echo $?" and steps:
            shown = lines[n + 1].strip() if n + 1 < len(lines) else "0"
            steps[-1] = (steps[-1][0], int(shown))
            continue
        steps.append((command, 0))
    return steps


# --- the sandbox --------------------------------------------------------------


@dataclass
class Sandbox:
    """One page's machine: a HOME, a work directory, a shell session carried across blocks."""

    root: Path
    env: dict[str, str]
    placeholders: dict[str, str]
    done: set[Block] = field(default_factory=set)

    @property
    def work(self) -> Path:
        return self.root / "work"

    def script(self, block: Block) -> str:
        code = block.code
        for placeholder, value in self.placeholders.items():
            code = code.replace(placeholder, value)
        if block.transcript:
            code = "\n".join(
                f'( {command}\n) || rc=$?; [ "${{rc:-0}}" = {expect} ] || '
                f"{{ echo 'expected exit {expect}, got '\"${{rc:-0}}\"' from: '"
                f"{shlex.quote(command)} >&2; exit 99; }}; unset rc"
                for command, expect in transcript_steps(code)
            )
        state, cwd = self.root / "shell.env", self.root / "shell.cwd"
        # The next block starts where this one ended: its variables and directory.
        return (
            f'[ -f {state} ] && . {state}\ncd "$(cat {cwd})"\n'
            f"trap 'export -p > {state}; pwd > {cwd}' EXIT\n"
            f"set -e -o pipefail\n{code}\n"
        )

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        """Run the page's earlier blocks first (if a test was selected alone), then this one."""
        page_blocks = [b for b in RUNNABLE if b.page == block.page]
        for earlier in page_blocks[: page_blocks.index(block)]:
            if earlier not in self.done:
                result = self._run(earlier)
                assert result.returncode == earlier.expect, _report(earlier, result)
        return self._run(block)

    def _run(self, block: Block) -> subprocess.CompletedProcess[str]:
        self.done.add(block)
        return subprocess.run(
            ["bash", "-c", self.script(block)],
            env=self.env,
            cwd=self.work,
            text=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )


def _report(block: Block, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{block.id}: exit {result.returncode}, the page says {block.expect}\n"
        f"--- block\n{block.code}\n--- stdout\n{result.stdout[-4000:]}\n"
        f"--- stderr\n{result.stderr[-4000:]}"
    )


def _shim(path: Path) -> None:
    """``keyvault`` as installed: this checkout's code under the test interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m keyvault "$@"\n'
    )
    path.chmod(0o755)


@dataclass(frozen=True)
class TrustTemplate:
    path: Path
    targets_id: str  # the targets key of GUNS[0]


@pytest.fixture(scope="module")
def trust_template(tmp_path_factory: pytest.TempPathFactory) -> TrustTemplate:
    """A trust dir made by notary: a root key, targets and snapshot keys for each GUN."""
    notary = Notary(find_tool("notary"), home=tmp_path_factory.mktemp("doc-notary-home"))
    path = tmp_path_factory.mktemp("doc-trust") / "trust"
    notary.generate_root(path)
    ids = {
        (gun, role): notary.import_key(path, fresh_ec_pem(), role, gun)
        for gun in GUNS
        for role in ("targets", "snapshot")
    }
    return TrustTemplate(path, ids[(GUNS[0], "targets")])


@pytest.fixture(scope="module")
def sandboxes() -> dict[str, Sandbox]:
    """One sandbox per page, made when the page's first block runs."""
    return {}


def _clone_checkout(work: Path) -> None:
    """This checkout's files (tracked, and new ones not ignored) in a fresh git repository,
    with ``.venv`` the test interpreter's virtualenv, as after ``bash scripts/test.sh``."""
    git = find_tool("git")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        src = REPO / os.fsdecode(name)
        if src.is_file() and not src.is_symlink():
            dst = work / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (work / ".venv").symlink_to(Path(sys.prefix))
    subprocess.run([git, "init", "-q", str(work)], check=True)
    subprocess.run([git, "add", "-A"], cwd=work, check=True)


def _is_clone_page(page: str) -> bool:
    path = REPO / page
    return path.is_file() and CLONE.search(path.read_text()) is not None


def _sandbox(page: str, template: TrustTemplate, root: Path) -> Sandbox:
    home, work = root / "home", root / "work"
    for d in (home, work, root / "run"):
        d.mkdir(mode=0o700, parents=True)
    shutil.copytree(template.path, home / ".docker" / "trust", symlinks=True)
    clone = _is_clone_page(page)
    if clone:
        _clone_checkout(work)
    # where the README's set-up command installs it; a clone's .venv is the real one
    venv_bin = root / "bin" if clone else work / ".venv" / "bin"
    _shim(venv_bin / "keyvault")
    tools = root / "tools"
    tools.mkdir()
    for tool in ("bao",):
        found = shutil.which(tool, path=str(Path(sys.executable).parent))
        if found:
            (tools / tool).symlink_to(found)
    path = [str(tools), "/usr/local/bin", "/usr/bin", "/bin"]
    if page != "README.md":  # installed with pipx or the like, as the docs say
        path.insert(0, str(venv_bin))
    env = {
        "HOME": str(home),
        "PATH": os.pathsep.join(path),
        "LANG": "C.UTF-8",
        "COLUMNS": "120",
        "TERM": "dumb",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "TMPDIR": str(root / "run"),
        **{k: v for k, v in passphrase_env().items() if k != "NOTARY_DELEGATION_PASSPHRASE"},
    }
    (root / "shell.cwd").write_text(str(work))
    return Sandbox(
        root,
        env,
        {
            "1a2b3c": template.targets_id[:12],
            "<SO PIN>": "so-pin-8642",
            "<user PIN>": "user-pin-1357",
        },
    )


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_doc_example_runs(
    block: Block,
    sandboxes: dict[str, Sandbox],
    trust_template: TrustTemplate,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if block.page not in sandboxes:
        sandboxes[block.page] = _sandbox(
            block.page, trust_template, tmp_path_factory.mktemp("doc-page")
        )
    result = sandboxes[block.page].run(block)
    assert result.returncode == block.expect, _report(block, result)


# --- the collection itself ----------------------------------------------------


def test_every_page_is_collected() -> None:
    """The globs reach the top-level pages, nested pages and the generated CLI reference."""
    names = {str(p.relative_to(REPO)) for p in pages()}
    assert {
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "SECURITY.md",
        "docs/cli.md",
        "docs/releasing.md",
        "docs/guides/restore-laptop.md",
        "docs/ci/trust-model.md",
    } <= names
    assert any(b.page == "CONTRIBUTING.md" for b in ALL)
    assert any(b.page == "docs/releasing.md" for b in RUNNABLE)
    assert any(b.page == "docs/guides/restore-laptop.md" for b in RUNNABLE)


def test_illustrative_blocks_say_why() -> None:
    """Every block left out of the run carries its reason (a bare marker does not count)."""
    marked = [b for b in ALL if b.illustrative is not None]
    assert marked, "no illustrative block found: has the marker changed?"
    assert [b.id for b in marked if len(b.illustrative or "") < 10] == []


def test_markers_sit_on_command_blocks() -> None:
    """A marker above anything but a command block would be ignored without a word."""
    stray = []
    for path in pages():
        page = str(path.relative_to(REPO))
        fences = {b.line for b in collect(path) if not b.setup}
        lines = path.read_text().split("\n")
        for n, line in enumerate(lines):
            if ILLUSTRATIVE.match(line) or EXIT.match(line):
                after = next((i for i in range(n + 1, len(lines)) if lines[i].strip()), -1)
                if after + 1 not in fences:
                    stray.append(f"{page}:{n + 1}")
    assert stray == []


COMMAND_START = re.compile(r"^\s*(keyvault|notary|bao|vault|aws|docker|sudo|export|pip|pipx) ")


def test_no_commands_hide_in_other_fences() -> None:
    """A command in a ``text`` (or unlabelled) fence would escape the run: label it ``sh``.

    The CLI reference's synopsis lines (``keyvault restore [OPTIONS]``) are not commands.
    """
    hidden = []
    for path in pages():
        lines = path.read_text().split("\n")
        collected = {b.line for b in collect(path)}
        inside: str | None = None
        for n, line in enumerate(lines):
            m = FENCE.match(line)
            if m and inside is None:
                inside = m.group("fence") if n + 1 not in collected else "skip"
                fence_line = n + 1
                fence = m.group("fence")
            elif inside is not None and line.strip() == fence:
                inside = None
            elif (
                inside not in (None, "skip")
                and COMMAND_START.match(line)
                and "[OPTIONS]" not in line
            ):
                hidden.append(f"{path.relative_to(REPO)}:{fence_line}")
    assert sorted(set(hidden)) == []


def test_a_page_is_one_shell_session_and_a_failure_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variables and the directory carry over; a failing command stops its block."""
    empty = tmp_path / "trust"
    empty.mkdir()
    box = _sandbox("docs/x.md", TrustTemplate(empty, "ab" * 32), tmp_path / "box")
    blocks = [
        Block("docs/x.md", 1, "export GREETING=hi\nmkdir sub && cd sub"),
        Block(
            "docs/x.md",
            5,
            'test "$GREETING" = hi && test "${PWD##*/}" = sub\nkeyvault --version && echo 1a2b3c',
        ),
        Block("docs/x.md", 9, "false\ntouch not-reached"),
        Block("docs/x.md", 13, "$ keyvault nope\n$ echo $?\n2", transcript=True),
    ]
    monkeypatch.setattr(sys.modules[__name__], "RUNNABLE", blocks)
    assert box.run(blocks[0]).returncode == 0
    second = box.run(blocks[1])
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-1] == "abababababab"  # the placeholder, replaced
    assert box.run(blocks[2]).returncode == 1
    assert not (box.work / "sub" / "not-reached").exists()
    assert box.run(blocks[3]).returncode == 0  # exit 2, as the transcript shows
    wrong = Block("docs/x.md", 17, "$ keyvault --version\n$ echo $?\n2", transcript=True)
    assert box._run(wrong).returncode == 99


def test_a_contributor_page_runs_in_a_copy_of_the_checkout(tmp_path: Path) -> None:
    """CONTRIBUTING.md's commands (.venv/bin/..., tests/...) run where a contributor runs
    them; the real virtualenv is used, never written."""
    assert _is_clone_page("CONTRIBUTING.md") and not _is_clone_page("README.md")
    empty = tmp_path / "trust"
    empty.mkdir()
    box = _sandbox("CONTRIBUTING.md", TrustTemplate(empty, "ab" * 32), tmp_path / "box")
    assert (box.work / "pyproject.toml").read_bytes() == (REPO / "pyproject.toml").read_bytes()
    assert (box.work / ".venv").resolve() == Path(sys.prefix).resolve()
    block = Block(
        "CONTRIBUTING.md",
        1,
        "git ls-files --error-unmatch keyvault/__init__.py\n"
        ".venv/bin/python -c 'import keyvault, os; print(keyvault.__file__)'\n"
        "keyvault --version",
    )
    run = box._run(block)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1] == str(box.work / "keyvault" / "__init__.py")
    installed = Path(sys.prefix) / "bin" / "keyvault"
    assert not installed.exists() or "PYTHONPATH=" not in installed.read_text()


def test_the_collector_finds_each_kind_of_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Indented fences, transcripts in a text fence, markers and setup comments."""
    page = tmp_path / "docs" / "p.md"
    page.parent.mkdir()
    page.write_text(
        "<!-- doctest-setup: keyvault init -->\n\n"
        "1. Step:\n\n    ```sh\n    keyvault doctor\n    ```\n\n"
        "<!-- illustrative: needs a real AWS account -->\n```bash\naws s3 ls\n```\n\n"
        "<!-- doctest: exit 3 -->\n```console\nkeyvault restore --all\n```\n\n"
        "```text\n$ keyvault nope\nkeyvault: error\n$ echo $?\n2\n```\n\n"
        "```toml\n[store]\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = collect(page)
    assert [(b.line, b.setup, b.illustrative, b.expect, b.transcript) for b in found] == [
        (1, True, None, 0, False),
        (5, False, None, 0, False),
        (10, False, "needs a real AWS account", 0, False),
        (15, False, None, 3, False),
        (19, False, None, 0, True),
    ]
    assert found[1].code == "keyvault doctor"
    assert transcript_steps(found[4].code) == [("keyvault nope", 2)]
