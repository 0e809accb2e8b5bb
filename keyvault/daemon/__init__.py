"""The backup daemon: file events -> durable journal -> backup, with retries and metrics.

Modules: :mod:`.watcher` (OS file events, ``private/**.key`` only),
:mod:`.journal` (SQLite queue of pending backups, never key bytes),
:mod:`.service` (the loop: debounce, T14 checks, backup with backoff,
reconciliation), :mod:`.health` (``/healthz`` and ``/metrics`` on loopback),
:mod:`.lock` (one daemon per state directory), :mod:`.log` (JSON lines).

Nothing here is imported by ``keyvault --help``: watchfiles and
prometheus-client are loaded only when the daemon (or its status) runs.
"""
