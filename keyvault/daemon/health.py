"""``/healthz`` and Prometheus ``/metrics`` on a loopback address.

The metrics live in a registry of their own (not prometheus-client's global
one), so nothing else in the process can add to or read from them. Nothing
exported is secret: counts, timestamps, error kinds, trust directory paths
and the store's canonical URI (which never holds credentials).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from keyvault.errors import ConflictError, UsageError

DEFAULT_PORT = 9498
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
NAMESPACE = "keyvault_daemon"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` with a loopback host (127.0.0.1, ::1 as ``[::1]:PORT``, localhost)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {value[:60]!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]") or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(
            f"--listen {value[:60]!r}: the health endpoint only listens on a loopback address",
            hint=f"use e.g. {DEFAULT_LISTEN}",
        )
    return host, int(port_text)


class Metrics:
    """The daemon's metrics, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.keys_watched = Gauge(
            f"{NAMESPACE}_keys_watched",
            "Key files found in the watched trust directories at the last scan.",
            registry=r,
        )
        self.keys_backed_up = Gauge(
            f"{NAMESPACE}_keys_backed_up",
            "Watched key files the store holds as they are: found so "
            "at the last scan (the start-up one too) or backed up "
            "since.",
            registry=r,
        )
        self.backups = Counter(
            f"{NAMESPACE}_backups_total",
            "Backups completed, by action (created, updated: written to "
            "the store; unchanged: already there).",
            ["action"],
            registry=r,
        )
        self.pending = Gauge(
            f"{NAMESPACE}_keys_pending",
            "Key files waiting for a backup (in the journal).",
            registry=r,
        )
        self.failing = Gauge(
            f"{NAMESPACE}_keys_failing", "Pending key files whose last attempt failed.", registry=r
        )
        self.failures = Counter(
            f"{NAMESPACE}_failures_total",
            "Failed backup attempts, by error kind.",
            ["kind"],
            registry=r,
        )
        self.refused = Counter(
            f"{NAMESPACE}_refused_total",
            "Files refused (T14 checks, not a key, symlink...), by reason.",
            ["reason"],
            registry=r,
        )
        self.last_success = Gauge(
            f"{NAMESPACE}_last_success_timestamp_seconds",
            "Unix time of the last successful backup (0: none yet).",
            registry=r,
        )
        self.oldest_pending = Gauge(
            f"{NAMESPACE}_oldest_pending_age_seconds",
            "Age of the oldest pending backup (0: none pending).",
            registry=r,
        )
        self.reconciliations = Counter(
            f"{NAMESPACE}_reconciliations_total",
            "Reconciliation runs, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.latency = Histogram(
            f"{NAMESPACE}_backup_latency_seconds",
            "From the first event for a key file to its durable backup.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.started = Gauge(
            f"{NAMESPACE}_start_time_seconds", "Unix time the daemon started.", registry=r
        )
        self.started.set(time.time())
        self._oldest: float | None = None
        self.oldest_pending.set_function(self._oldest_age)

    def set_pending(self, count: int, oldest_first_seen: float | None, failing: int) -> None:
        self.pending.set(count)
        self.failing.set(failing)
        self._oldest = oldest_first_seen

    def _oldest_age(self) -> float:
        oldest = self._oldest
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class HealthServer:
    """A small HTTP server in a background thread: GET /healthz, GET /metrics."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health: Callable[[], tuple[int, dict[str, Any]]],
    ) -> None:
        handler = _handler(metrics, health)
        server_class = _V6Server if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise ConflictError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                hint="is another daemon or program using that port? pick "
                "another with --listen 127.0.0.1:PORT",
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 1.0},
            name="keyvault-health",
            daemon=True,
        )

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _V6Server(ThreadingHTTPServer):
    import socket as _socket

    address_family = _socket.AF_INET6


def _handler(
    metrics: Metrics, health: Callable[[], tuple[int, dict[str, Any]]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "keyvault-daemon"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST

                self._send(200, CONTENT_TYPE_LATEST, metrics.render())
            elif path == "/healthz":
                code, doc = health()
                self._send(
                    code, "application/json", json.dumps(doc, sort_keys=True).encode() + b"\n"
                )
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # requests are not logged: the JSON log is for backups

    return Handler
