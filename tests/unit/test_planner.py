"""Issue 7: the offline planner's rules, history and tunable variants; the decision rule."""

from __future__ import annotations

from schedagent.agent import planner
from schedagent.agent import report as tune_report
from schedagent.execution import measure as live
from schedagent.models import Features, Slo, Target, WorkloadProfile
from schedagent.policy import repo


def _profile(cls: str) -> WorkloadProfile:
    f = Features(1.0, 0.5, 0, 4, 500.0, 10.0, 300.0, 50.0, 0.1, 1, 0, 4, 2, 1.0, None, None)
    return WorkloadProfile(
        cls,
        0.8,
        f,
        Slo("p99_wakeup_latency", "<=", 1000.0, "us", "r"),  # type: ignore[arg-type]
        "because",
        "pid 1",
        5.0,
    )


def test_rules_rank_by_class_and_only_name_real_policies() -> None:
    assert [c.policy for c in planner.rank(_profile("mixed"), {})] == ["target", "latency", "vtime"]
    assert planner.rank(_profile("throughput"), {})[0].policy == "batch"
    names = set(repo.builtin_names())
    for cls in planner.RULES:
        assert {c.policy for c in planner.rank(_profile(cls), {})} <= names


def test_history_on_this_machine_reorders_candidates() -> None:
    history = {
        "target": {"mixed": {"wins": 0, "losses": 3, "ties": 0}},
        "vtime": {"mixed": {"wins": 2, "losses": 0, "ties": 1}},
    }
    ranked = planner.rank(_profile("mixed"), history)
    assert [c.policy for c in ranked] == ["vtime", "latency", "target"]
    assert "2 wins, 0 losses, 1 ties" in ranked[0].reason
    # history for another class does not count
    other = {"target": {"batch": {"wins": 0, "losses": 9, "ties": 0}}}
    assert planner.rank(_profile("mixed"), other)[0].policy == "target"


def test_variants_stay_inside_declared_bounds() -> None:
    for name in repo.builtin_names():
        meta = repo.resolve(name).meta
        assert meta is not None
        for v in planner.variants(planner.Candidate(name)):
            for key, value in v.overrides.items():
                spec = meta.tunables[key]
                assert spec.min <= value <= spec.max
            # every variant passes the same validation the engine applies
            repo.resolve(name).resolve_tunables(v.overrides)


def test_live_metric_follows_the_slo() -> None:
    lat = live.metric_for(Slo("p99_wakeup_latency", "<=", 2000.0, "us", "r"))
    assert (lat.name, lat.direction) == ("runq_wait_us", "lower")
    thr = live.metric_for(Slo("completed_ops_per_s", "max", None, "ops/s", "r"))
    assert (thr.name, thr.direction) == ("cpus_used", "higher")
    msg = live.metric_for(Slo("completion_time", "min", None, "s", "r"))
    assert (msg.name, msg.direction) == ("io_bytes_per_s", "higher")


def _report(
    trials: list[tune_report.Trial], ended: tune_report.Ended = "complete"
) -> tune_report.TuneReport:
    rep = tune_report.TuneReport("pid 7", {}, "slo", {}, "offline", [100.0, 110.0, 105.0, 98.0])
    rep.trials, rep.ended = trials, ended
    return rep


def _trial(policy: str, verdict: str, ratio: float) -> tune_report.Trial:
    t = tune_report.Trial(
        policy,
        {},
        "r",
        "measured",
        None,
        [ratio * 100] * 4,
        verdict,
        ratio,
        (ratio - 0.05, ratio + 0.05),
        0.01,
    )
    return t


def test_decision_keeps_only_a_confirmed_candidate_and_prints_how_to_reapply() -> None:
    metric = live.metric_for(Slo("p99_wakeup_latency", "<=", 2000.0, "us", "r"))
    target = Target(pid=7)
    none = tune_report.decide(
        _report([_trial("vtime", "no-difference", 0.97), _trial("latency", "worse", 1.4)]),
        metric,
        target,
    )
    assert none.policy == "eevdf" and "keeping EEVDF" in none.why and none.reapply is None
    # issue 13: a screening "better" alone is not kept; the confirmation decides
    unconfirmed = _trial("target", "better", 0.4)
    assert tune_report.decide(_report([unconfirmed]), metric, target).policy == "eevdf"
    unconfirmed.confirmation = tune_report.Confirmation(
        [100.0] * 4, [90.0] * 4, "no-difference", 0.9, (0.8, 1.1), 0.3
    )
    refused = tune_report.decide(_report([unconfirmed]), metric, target)
    assert refused.policy == "eevdf" and refused.verdict == "not confirmed"
    confirmed = _trial("target", "better", 0.4)
    confirmed.confirmation = tune_report.Confirmation(
        [100.0, 101, 102, 103], [40.0, 41, 42, 43], "better", 0.41, (0.38, 0.44), 0.029
    )
    best = tune_report.decide(
        _report([_trial("vtime", "better", 0.8), confirmed, _trial("latency", "worse", 1.4)]),
        metric,
        target,
    )
    assert best.policy == "target" and best.verdict == "better" and best.ratio == 0.41
    assert "confirmed on 4 fresh interleaved windows against 4 of EEVDF" in best.why
    assert best.reapply == "schedagent policies load target --pid 7 --switch-all"
    stopped = tune_report.decide(_report([confirmed], "target-exited"), metric, target)
    assert stopped.policy == "eevdf" and "stopped early" in stopped.why
