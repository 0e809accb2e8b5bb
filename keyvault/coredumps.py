"""No core dump of a process that may hold key bytes, identities, PINs or tokens.

A crash (or a SIGABRT/SIGQUIT someone sends) would otherwise write the whole
address space to disk: unwrapped keys, the recovery identity, a Vault token,
for good and readable by whoever reads core files. The CLI calls
:func:`disable_core_dumps` first thing, before any secret is read, so every
command and the daemon are covered:

* ``RLIMIT_CORE`` 0, soft and hard: no core file, and neither this process
  nor a command it runs (``keyvault exec``) can raise it again;
* on Linux, ``prctl(PR_SET_DUMPABLE, 0)``: no core even where ``core_pattern``
  pipes to a helper that ignores the limit, and no ptrace or ``/proc/<pid>/mem``
  reading by other processes of the same user.

Elsewhere only the limit is set. Failures are ignored: hardening must never
stop a restore.
"""

from __future__ import annotations

import contextlib
import sys

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def disable_core_dumps() -> None:
    """Set RLIMIT_CORE to 0 (soft and hard) and, on Linux, mark the process not dumpable."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        # MemoryError: a libffi that needed writable+executable memory under a
        # MemoryDenyWriteExecute sandbox (the daemon's unit sets it; it works there today).
        with contextlib.suppress(ImportError, OSError, AttributeError, MemoryError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
