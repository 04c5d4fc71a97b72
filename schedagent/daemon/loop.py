"""The daemon's loop: find each target, dispatch it to the guard or the triggers, and
start and stop everything around that (socket API, metrics, systemd, prebuild).

Each poll, every configured target is looked up (``matcher``). A target that is gone
releases its policy; a new one is handed to the triggers once it has settled; an active
policy gets one guard check; a target under EEVDF is watched for phase changes and SLO
violations. While someone else's sched_ext scheduler is attached, the daemon steps
aside. SIGTERM returns the system to EEVDF before exit; SIGKILL closes the link fd, and
the kernel does the same.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from schedagent import services
from schedagent.daemon import guard, matcher, sdnotify, state, triggers
from schedagent.daemon.api import Api
from schedagent.daemon.config import DaemonConfig
from schedagent.daemon.control import Control
from schedagent.daemon.metrics import MetricsServer
from schedagent.daemon.socketapi import ApiServer
from schedagent.daemon.state import TargetState
from schedagent.errors import SchedagentError, TargetGone
from schedagent.execution import engine, host
from schedagent.store import Store

log = logging.getLogger(__name__)

#: How much longer than the tune budget the loop may stay silent before the watchdog
#: stops pinging (a hung loop then gets restarted by systemd)
WATCHDOG_SLACK_S = 300.0


class _Stop(BaseException):
    """SIGTERM/SIGINT: unwind whatever runs (detaching on the way) and exit."""


class Daemon(Control):
    """The daemon's state and loop. ``run()`` blocks until SIGTERM or ``stop()``."""

    def __init__(self, cfg: DaemonConfig, store: Store | None = None) -> None:
        super().__init__(cfg, store)
        #: the socket API's request handler
        self.api = Api(self)
        self._stop = threading.Event()
        self._foreign: str | None = None
        self._api_server: ApiServer | None = None
        self._metrics: MetricsServer | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Recover, serve the API (and metrics), then loop until stopped; detach at exit."""
        note = engine.recover(self.store)
        if note:
            self.audit("recover", None, {"note": note})
        state.load(self.store, self.targets)
        self._api_server = ApiServer(self.cfg.socket, self.cfg.socket_group, self.api.handle)
        self._api_server.start()
        if self.cfg.prometheus_port:
            self._metrics = MetricsServer(self, self.cfg.prometheus_port)
            self._metrics.start()
        self._start_watchdog()
        self._start_prebuild()
        self._start_observer()
        self.audit(
            "start",
            None,
            {"mode": self.cfg.mode, "targets": list(self.targets), "pid": os.getpid()},
        )
        sdnotify.notify(
            f"READY=1\nSTATUS=watching {len(self.targets)} target(s), mode {self.cfg.mode}"
        )
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                for ts in list(self.targets.values()):
                    self._step(ts)
                self._stop.wait(self.cfg.poll_interval_s)
        except _Stop:
            pass
        finally:
            self._stop.set()  # the watchdog thread
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sdnotify.notify("STOPPING=1")
            self._shutdown()

    def stop(self) -> None:
        """Ask ``run()`` to return once the current poll is done."""
        self._stop.set()

    def _start_observer(self) -> None:
        """Attach the observer in the background: every window of every target then
        reads its maps instead of polling procfs (the first window waits for it)."""

        def work() -> None:
            why_not = host.observer_start()
            if why_not is not None:
                log.warning("observer unavailable, windows poll procfs: %s", why_not)

        threading.Thread(target=work, name="observer", daemon=True).start()

    def _start_prebuild(self) -> None:
        """Prepare vmlinux.h and the built-in policies for this kernel in the background.

        Objects are keyed by the kernel build id, so after a kernel update the first start
        compiles them again; the next tune then waits on no compile (issue 14).
        """
        if not engine.has_sched_ext():
            return

        def work() -> None:
            try:
                report = services.prebuild()
            except Exception:
                log.exception("preparing the built-in policies failed")
                return
            log.info(
                "prebuild for kernel %s: %d objects, %d failed",
                report.build_id[:12],
                len(report.objects),
                len(report.failed),
            )
            with self.lock:
                self.audit(
                    "prebuild",
                    None,
                    {
                        "build_id": report.build_id,
                        "objects": report.objects,
                        "failed": report.failed,
                    },
                )

        threading.Thread(target=work, name="prebuild", daemon=True).start()

    def _on_signal(self, signum: int, _frame: object) -> None:
        # No locks here (an Event.set() could deadlock against the interrupted code): the
        # exception unwinds whatever runs, and every context manager on the way detaches.
        raise _Stop(signal.Signals(signum).name)

    def _shutdown(self) -> None:
        # SIGTERM must detach every target even when the store is broken (read-only disk,
        # corrupted file): the engine's teardown detaches before it records, so a failure
        # here is logged and the next target is still released (issue 12)
        with self.lock:
            for ts in self.targets.values():
                if ts.active is not None:
                    try:
                        self.release(ts, "daemon stopping", keep_applied=True)
                    except Exception:
                        log.exception("releasing %s at stop failed after its detach", ts.cfg.name)
                        ts.active = None
        try:
            self.audit("stop", None, {"state_after": host.sched_ext_state().state})
        except Exception:
            log.exception("the stop record was not written (the store failed)")
        if self._api_server is not None:
            self._api_server.stop()
        if self._metrics is not None:
            self._metrics.stop()
        self.store.close()

    def _start_watchdog(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        if interval is None:
            return
        # a tune can run for minutes: the loop's heartbeat is refreshed by its progress,
        # and a loop silent for longer than the tune budget is hung; stop pinging then
        stale_s = self.cfg.budgets.budget_s + WATCHDOG_SLACK_S

        def ping() -> None:
            while not self._stop.wait(interval):
                if time.monotonic() - self.heartbeat < stale_s:
                    sdnotify.notify("WATCHDOG=1")

        threading.Thread(target=ping, name="watchdog", daemon=True).start()

    # --- one poll -------------------------------------------------------------------------

    def _step(self, ts: TargetState) -> None:
        """Find the target and hand it to the guard or the triggers; errors are audited."""
        try:
            found = matcher.find(ts.cfg.match)
            with self.lock:
                if found is None:
                    if ts.active is not None:
                        self.release(ts, "target gone")
                    if ts.target is not None:
                        self.audit("target-gone", ts, {})
                    ts.target, ts.phase, ts.profile = None, "waiting", None
                    return
                if self._foreign_scheduler(ts):
                    return
                if found != ts.target and not triggers.is_settled(found, self.cfg.settle_s):
                    return  # let it reach its steady state first
                if found != ts.target:
                    if ts.active is not None:
                        self.release(ts, "target replaced")
                    ts.target, ts.profile = found, None
                    self._trigger(ts, "new-target")
                    return
                if ts.active is not None:
                    self._guard(ts)
                elif ts.phase in ("observed", "eevdf"):
                    triggers.watch_eevdf(self, ts)
        except TargetGone:
            with self.lock:
                if ts.active is not None:
                    self.release(ts, "target exited")
                ts.target, ts.phase = None, "waiting"
        except SchedagentError as err:
            self.audit("error", ts, {"error": str(err)})

    def _foreign_scheduler(self, ts: TargetState) -> bool:
        """Someone else's sched_ext scheduler is attached: step aside, and say so once."""
        if ts.active is not None or self.cfg.mode == "observe":
            return False
        snap = host.sched_ext_state()
        if snap.state == "disabled" or any(t.active for t in self.targets.values()):
            self._foreign = None
            return False
        if self._foreign != snap.ops:
            self._foreign = snap.ops
            self.audit(
                "step-aside",
                ts,
                {
                    "outcome": f"{snap.ops} ({snap.state}) is attached "
                    "and not ours; nothing is tuned until it goes",
                    "rationale": "one sched_ext scheduler at a time; "
                    "the administrator's choice wins",
                },
            )
        return True

    def _trigger(self, ts: TargetState, why: str) -> None:
        """Act on a trigger for this target (see ``triggers.trigger``)."""
        triggers.trigger(self, ts, why)

    def _guard(self, ts: TargetState) -> None:
        """One guard check of the active policy; a phase change re-tunes at once."""
        retune = guard.check(self, ts)
        if retune is not None:
            self._trigger(ts, retune)
