"""What the global options say, and the Config they resolve to (built once)."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyvault.config import Config
    from keyvault.ops.session import Session


@dataclass
class CliState:
    config_path: Path | None = None
    trust_dir: Path | None = None
    json: bool = False
    store: str | None = None
    wrappers: list[str] = field(default_factory=list)
    team: str | None = None
    acting_as: str | None = None  # --as: checked by keyvault.ops.access (file store only)
    trust_sealers: list[str] = field(default_factory=list)  # --trust-sealer, this run only
    allow_unsigned: bool = False  # --allow-unsigned, this run only
    _config: Config | None = field(default=None, repr=False)

    def config(self, *, missing_ok: bool = False) -> Config:
        """The resolved config; ``missing_ok`` lets ``init`` name a file it will create."""
        if self._config is None:
            from keyvault.config import load_config

            config = load_config(self.config_path, dict(os.environ), missing_ok=missing_ok)
            changes: dict[str, object] = {}
            if self.trust_dir is not None:
                changes["trust_dir"] = self.trust_dir.expanduser()
            if self.store:
                changes["store"] = self.store
            if self.wrappers:
                changes["wrappers"] = tuple(self.wrappers)
            if self.team:
                from keyvault.names import validate_team

                changes["team"] = validate_team(self.team)
            if self.trust_sealers:
                changes["trusted_sealers"] = (*config.trusted_sealers, *self._explicit_pins())
            if self.allow_unsigned:
                changes["allow_unsigned"] = True
                _loud(
                    "--allow-unsigned: unsigned (format v1) envelopes are accepted for this "
                    "run; anyone who could write the store could have sealed them. Re-seal "
                    "them: 'keyvault rewrap --all --reseal --allow-unsigned'"
                )
            self._config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
        return self._config

    def _explicit_pins(self) -> list[str]:
        from keyvault.names import validate_fingerprint

        pins = [validate_fingerprint(f) for f in self.trust_sealers]
        for pin in pins:
            _loud(
                f"--trust-sealer: trusting envelopes sealed by {pin} for this run. Check it "
                "against the fingerprint 'keyvault init' printed on the machine that made "
                "the backups: whoever holds that sealer can make you install their keys"
            )
        return pins

    def use_jobs(self, jobs: int | None) -> None:
        """A command's --jobs: how many keys at once, and so how many pooled connections."""
        if jobs:
            self._config = dataclasses.replace(self.config(), concurrency=jobs)

    def session(self) -> Session:
        from keyvault.ops.session import Session

        return Session(self.config(), prompt=terminal_prompt(), acting_as=self.acting_as)


def _loud(message: str) -> None:
    sys.stderr.write(f"keyvault: WARNING: {message}\n")


class _TerminalPrompt:
    """Reads a secret from the terminal without echo; never from argv."""

    def __call__(self, prompt: str, *, confirm: bool = False) -> str:
        import getpass

        value = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"{prompt} (again): ") != value:
            from keyvault.errors import UsageError

            raise UsageError("the two entries did not match")
        return value


def terminal_prompt() -> _TerminalPrompt | None:
    return _TerminalPrompt() if sys.stdin.isatty() else None
