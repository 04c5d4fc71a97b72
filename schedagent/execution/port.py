"""The real ``Executor`` (``schedagent.agent.port``): reasoning's requests, carried out.

Each method is a thin step onto ``engine`` (gates, guarded attach), ``measure`` (live
windows, profiles) and ``kernel`` (priority, the target's processes). ``services``
builds one per tune run, over that run's store, and hands it to ``agent.tune`` or
``agent.llm``.
"""

from __future__ import annotations

import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path

import psutil

from schedagent import config
from schedagent.execution import engine, interventions, measure
from schedagent.kernel import partial, procstat
from schedagent.kernel.knobs import KnobSession
from schedagent.models import (
    LiveMetric,
    PolicyDraft,
    Slo,
    Target,
    VerifyResult,
    WorkloadProfile,
)
from schedagent.policy import repo
from schedagent.store import Store

#: the most processes whose names go to the model
MAX_NAMED_PROCESSES = 8


class LiveExecutor:
    """Carries out a tune's requests on this machine, recording in ``store``."""

    def __init__(self, store: Store, caller_uid: int | None = None) -> None:
        self.store = store
        #: who asked for the tune (the daemon socket's peer; None: this process's user):
        #: the knobs it holds are checked against that caller, every time
        self.caller_uid = caller_uid
        self._staging: Path | None = None

    def profile(self, target: Target, duration_s: float, slo: Slo | None) -> WorkloadProfile:
        """Observe the target and classify it (``measure.profile``)."""
        return measure.profile(target, duration_s, slo)

    def verify(self, spec: str, overrides: dict[str, int]) -> VerifyResult:
        """The gates up to the kernel verifier (``engine.verify``)."""
        return engine.verify(spec, overrides, self.store)

    def attach(
        self, spec: str, overrides: dict[str, int], target: Target, *, canary: bool
    ) -> AbstractContextManager[engine.Session]:
        """``engine.session``: the canary moves only the target's threads (partial mode),
        a measured window runs every task on the candidate."""
        req = engine.RunRequest(
            spec,
            overrides,
            target,
            switch_all=not canary,
            actor="tune-canary" if canary else "tune",
        )
        return engine.session(req, self.store)

    def check_knob(self, spec: str) -> None:
        """``interventions.check_knob``: bounds, the RT throttle, root for a raise."""
        interventions.check_knob(spec, self.caller_uid)

    def hold_knob(
        self, spec: str, target: Target, others: list[int]
    ) -> AbstractContextManager[KnobSession]:
        """``interventions.knob_session`` on the target (or ``others``), journaled in this
        run's store."""
        return interventions.knob_session(spec, self.store, target, self.caller_uid, others)

    def meter(
        self, target: Target, slo: Slo, latency_log: str | None
    ) -> AbstractContextManager[measure.Meter]:
        """A ``measure.Meter`` (the bcc probe for latency SLOs, the access log when given)."""
        return measure.Meter(target, slo, latency_log=latency_log)

    def planned_metric(self, slo: Slo, latency_log: str | None) -> LiveMetric:
        """``measure.planned_metric``: what ``meter`` would measure."""
        return measure.planned_metric(slo, latency_log)

    def attaches_probe(self, slo: Slo, latency_log: str | None) -> bool:
        """Whether ``meter`` compiles and attaches the bcc probe (a latency SLO, no log,
        and no observer: the observer's object is cached per kernel and already loaded
        by the profile)."""
        return latency_log is None and measure.wants_probe(slo) and not measure.has_observer()

    def priority(self) -> AbstractContextManager[str]:
        """``procstat.priority``: SCHED_FIFO 1, else nice -10, for a ``with`` block."""
        return procstat.priority()

    def process_names(self, target: Target) -> list[str]:
        """``name: command line`` of up to ``MAX_NAMED_PROCESSES`` of the target's
        processes; one that exits meanwhile is left out."""
        names = []
        for tgid in partial.target_tgids(target)[:MAX_NAMED_PROCESSES]:
            try:
                proc = psutil.Process(tgid)
                names.append(f"{proc.name()}: {' '.join(proc.cmdline())}")
            except psutil.Error:
                continue
        return names

    def stage_policy(self, draft: PolicyDraft) -> str:
        """Write the draft to ``<state>/synthesis/<run>/<name>/`` (a repair replaces the
        last attempt); returns the directory, a spec ``repo.resolve`` takes."""
        if self._staging is None:
            self._staging = config.state_dir() / "synthesis" / time.strftime("%Y%m%d-%H%M%S")
        directory = self._staging / draft.name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        (directory / "policy.yaml").write_text(draft.policy_yaml)
        (directory / f"{draft.name}.bpf.c").write_text(draft.source)
        return str(directory)

    def adopt_policy(self, spec: str) -> str:
        """Copy a staged policy into ``repo.synthesized_dir()``, where ``repo.resolve``
        finds it by name; a policy already kept under that name stays as it is."""
        staged = Path(spec)
        kept = repo.synthesized_dir() / staged.name
        if not kept.exists():
            shutil.copytree(staged, kept)
        return staged.name
