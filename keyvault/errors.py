"""One exception hierarchy; each class carries the CLI exit code it maps to.

Library code raises these and never prints. Only the CLI turns them into a
message and an exit code. Messages must never contain secrets (key bytes,
DEKs, passphrases, tokens, PINs): they name the key, the path or the backend,
what failed, and what to do next. A URI in a message or hint is redacted here
(``user:secret@``, ``pin-value``), however the message was built.
"""

from __future__ import annotations

from keyvault.redact import redact


class KeyvaultError(Exception):
    """Base class: a failure keyvault understands and can explain."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.hint = None if hint is None else redact(hint)
        #: Set once the error was recorded in the audit log, so it is not recorded twice.
        self.audited = False
        #: The wrapper (its URI, redacted) whose call failed, when that is the cause: a
        #: command groups its keys' failures by it (keyvault.envelope.through).
        self.wrapper: str | None = None

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"

    def to_dict(self) -> dict[str, object]:
        return {
            "error": self.kind,
            "exit_code": self.exit_code,
            "message": self.message,
            "hint": self.hint,
        }


class LocalIOError(KeyvaultError):
    """A local file-system operation failed (disk full, read-only, I/O error)."""

    exit_code = 1
    kind = "io"


class UsageError(KeyvaultError):
    """Bad arguments, bad configuration, or an input that is not what it claims."""

    exit_code = 2
    kind = "usage"


class InvalidInputError(UsageError):
    """An input file (key file, config, policy) is malformed."""

    kind = "invalid-input"


class NotFoundError(KeyvaultError):
    """The trust directory, a key, an object or a store does not exist."""

    exit_code = 3
    kind = "not-found"


class AccessDeniedError(KeyvaultError):
    """Permissions, a wrong passphrase or PIN, or a policy refused the request."""

    exit_code = 4
    kind = "access-denied"


class IntegrityError(KeyvaultError):
    """An envelope or a restored file failed authentication or a digest check."""

    exit_code = 5
    kind = "integrity"


class BackendUnavailableError(KeyvaultError):
    """A store or wrapper backend could not be reached or is not installed."""

    exit_code = 6
    kind = "unavailable"


class ThrottledError(BackendUnavailableError):
    """The backend is up but says "slow down" (KMS ThrottlingException, Vault HTTP 429,
    S3 SlowDown), still after the SDK's own retries.

    Not a backend that is down: a drill backs off and retries (keyvault.ops.pacing),
    and it never trips a run's circuit breaker (keyvault.breaker).
    """


class ConflictError(KeyvaultError):
    """The target already holds something different (a file or an object)."""

    exit_code = 7
    kind = "conflict"


class ChangedOnDiskError(ConflictError):
    """A local file changed between the scan that read it and its use."""


class PartialFailureError(KeyvaultError):
    """A bulk operation finished but some items failed; the worst code wins."""

    kind = "partial"

    def __init__(self, message: str, *, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "local I/O failure or unexpected error",
    2: "usage error or invalid input (bad arguments, config, key file)",
    3: "not found (trust directory, key, object, store)",
    4: "access denied (permissions, passphrase, policy)",
    5: "integrity failure (tampered or corrupt envelope, digest mismatch)",
    6: "backend unavailable (store or wrapper unreachable or not installed)",
    7: "conflict (target exists with different content)",
    8: "coverage gap (a key the trust server relies on is not backed up)",
}

#: ``keyvault coverage``: at least one key the published metadata relies on is not backed up.
COVERAGE_GAP_EXIT = 8
