"""Prometheus text metrics of a running daemon, served on ``127.0.0.1:PORT/metrics``.

Off unless ``prometheus_port`` is configured. The text is built from a snapshot of the
loop's state without its lock (a tune holds that for minutes).
"""

from __future__ import annotations

import http.server
import threading

from schedagent.daemon import state
from schedagent.daemon.control import Control
from schedagent.execution import host

#: The content type of Prometheus' text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4"


def metrics_text(ctl: Control) -> str:
    """The daemon's metrics in Prometheus' text format."""
    lines = [
        "# TYPE schedagent_active_policy gauge",
        "# TYPE schedagent_slo_metric gauge",
        "# TYPE schedagent_rollbacks_total counter",
        "# TYPE schedagent_quarantine_size gauge",
        "# TYPE schedagent_observer_attached gauge",
        "# TYPE schedagent_observer_run_seconds_total counter",
        "# TYPE schedagent_observer_events_total counter",
        "# TYPE schedagent_observer_cpu_ratio gauge",
    ]
    # no lock: a snapshot is enough, and a tune holds the lock for minutes
    for name, ts in ctl.targets.items():
        view = state.view(ts)
        lines.append(f'schedagent_active_policy{{target="{name}",policy="{view["policy"]}"}} 1')
        if view["last_value"] is not None:
            lines.append(
                f'schedagent_slo_metric{{target="{name}",'
                f'metric="{view["metric"]}"}} {view["last_value"]}'
            )
    lines.append(f"schedagent_rollbacks_total {ctl.rollbacks_total}")
    lines.append(f"schedagent_quarantine_size {state.quarantine_size()}")
    obs = host.observer_status()
    lines.append(f"schedagent_observer_attached {int(bool(obs['attached']))}")
    if obs["attached"]:
        # the kernel's BPF run-time statistics of the observer's programs since attach
        lines.append(f"schedagent_observer_run_seconds_total {int(str(obs['run_ns'])) / 1e9:.6f}")
        lines.append(f"schedagent_observer_events_total {obs['events']}")
        ratio = float(str(obs["cpu_pct_of_one_core"])) / 100
        lines.append(f"schedagent_observer_cpu_ratio {ratio:.6f}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serve :func:`metrics_text` over HTTP on the loopback interface, in a thread."""

    def __init__(self, ctl: Control, port: int) -> None:
        self.ctl, self.port = ctl, port
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Bind the port and serve in a background thread."""
        ctl = self.ctl

        class _Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = metrics_text(ctl).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass  # scrapes are not operational news

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    def stop(self) -> None:
        """Stop serving requests (the listening socket goes with the process)."""
        if self._server is not None:
            self._server.shutdown()
