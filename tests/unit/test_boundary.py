"""Issue 12: the trust boundary, tried as an attacker would (non-BPF half).

Each test plays a caller that a confused or prompt-injected model, or a local user,
could be: it names paths and pids it should not, floods the socket, plants decoys,
sends hostile patterns, asks for more tool calls than budgeted, and breaks the store
under a running or rolling-back engine. Everything runs on the host: the kernel parts
(sched_ext sysfs, the struct_ops link) are tmp trees or fakes of the kernel, never of
the code under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from schedagent import ops, services
from schedagent.daemon import config, matcher
from schedagent.daemon.socketapi import ApiClient, ApiServer
from schedagent.errors import (
    ConfigError,
    SchedagentError,
    SchedExtBusy,
    StoreUnavailable,
    TargetGone,
    TargetRefused,
)
from schedagent.execution import engine
from schedagent.kernel import cgroupfs, emergency, partial, procstat
from schedagent.models import Target
from schedagent.store import Store

SECRET = "root:$6$SECRET-HASH-issue12$:19000:0:99999:7:::"


def _wait(pred: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


# --- cgroup paths -------------------------------------------------------------------------


@pytest.fixture
def cgroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake cgroup fs: ``ok`` is a real cgroup, ``evil`` and ``link`` are the attacks."""
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cgroup.procs").write_text("1\n")
    root = tmp_path / "cg"
    (root / "ok").mkdir(parents=True)
    (root / "ok" / "cgroup.procs").write_text("123\n456\n")
    (root / "evil").mkdir()
    (root / "evil" / "cgroup.procs").symlink_to(secret)
    (root / "evil" / "cgroup.threads").symlink_to(secret)
    (root / "link").symlink_to(outside)
    (root / "evil2").mkdir()  # a symlinked file that holds valid ids: only O_NOFOLLOW stops it
    (root / "evil2" / "cgroup.procs").symlink_to(outside / "cgroup.procs")
    (root / "notids").mkdir()
    (root / "notids" / "cgroup.procs").write_text(SECRET + "\n")
    monkeypatch.setattr(cgroupfs, "CGROUP_ROOT", root)
    return root


def test_a_real_cgroup_is_read(cgroot: Path) -> None:
    assert cgroupfs.read_ids("ok") == [123, 456]
    assert cgroupfs.read_ids("/ok/") == [123, 456]


@pytest.mark.parametrize(
    "path",
    [
        "evil",
        "evil2",
        "link",
        "link/",
        "notids",
        "../../../tmp/x",
        "ok/../evil",
        "ok/../../outside",
        "../outside",
        "ok/./x",
        "a//b",
        "ok\x00",
        "..",
    ],
)
def test_a_cgroup_path_that_leaves_the_cgroup_fs_is_refused_without_leaking(
    cgroot: Path, path: str
) -> None:
    """Issue 12: symlinks, `..` and non-id files are refused; the secret never shows."""
    with pytest.raises(TargetRefused) as err:
        cgroupfs.read_ids(path)
    text = str(err.value)
    assert "SECRET" not in text and "root:" not in text, text
    assert "Fix:" in text and "relative to /sys/fs/cgroup" in text


def test_errors_do_not_tell_whether_a_path_outside_exists(cgroot: Path) -> None:
    """An existing file behind a symlinked directory and a missing one read the same."""
    answers = []
    for path in ("link", "nonexistent"):
        with pytest.raises(TargetRefused) as err:
            cgroupfs.read_ids(path)
        answers.append(str(err.value).replace(repr(path), "PATH"))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("op", ["profile_workload", "runqueue_latency"])
def test_the_traversal_attack_through_the_operations_leaks_nothing(cgroot: Path, op: str) -> None:
    """The issue's exploit: cgroup "../../../tmp/x" with x/cgroup.procs -> /etc/shadow."""
    for path in ("evil", "../../../" + str(cgroot.parent / "evil").lstrip("/"), "notids"):
        with pytest.raises(SchedagentError) as err:
            ops.call(op, {"cgroup": path, "duration_s": 0.5}, "test")
        assert "SECRET" not in str(err.value), str(err.value)


@contextlib.contextmanager
def _api(tmp_path: Path, handler: Any, **kw: Any) -> Iterator[Path]:
    sock = tmp_path / "api.sock"
    server = ApiServer(sock, "no-such-group-here", handler, **kw)
    server.start()
    try:
        yield sock
    finally:
        server.stop()


def test_the_traversal_attack_over_the_daemon_socket_leaks_nothing(
    cgroot: Path, tmp_path: Path
) -> None:
    with _api(tmp_path, ops.call) as sock, pytest.raises(SchedagentError) as err:
        ApiClient(sock).call("profile_workload", {"cgroup": "evil", "duration_s": 0.5})
    assert "SECRET" not in str(err.value) and "refused" in str(err.value)


def test_an_unexpected_error_reaches_a_socket_client_without_its_text(tmp_path: Path) -> None:
    """The socket once replied with repr(err): whatever the error quoted went out."""

    def handler(op: str, args: dict[str, Any], actor: str) -> dict[str, Any]:
        raise ValueError(f"invalid literal for int() with base 10: {SECRET!r}")

    with _api(tmp_path, handler) as sock, pytest.raises(SchedagentError) as err:
        ApiClient(sock).call("status", {})
    assert "SECRET" not in str(err.value) and "InternalError" in str(err.value)
    assert "daemon's log" in str(err.value)


# --- pids ---------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _kernel_thread() -> int | None:
    for proc in psutil.process_iter(["pid"]):
        pid = proc.info["pid"]
        try:
            flags = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[6])
        except (OSError, IndexError, ValueError):
            continue
        if flags & partial.PF_KTHREAD and pid != 2:
            return int(pid)
    return None


def test_pid_1_is_refused_as_a_canary_over_the_operations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: MCP load_policy with pid 1 was accepted: a system-wide "canary"."""
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path))
    with pytest.raises(TargetRefused, match="other than init"):
        ops.call("load_policy", {"policy": "vtime", "pid": 1}, "test")


def test_a_kernel_thread_is_refused_as_a_canary() -> None:
    kthread = _kernel_thread()
    if kthread is None:
        pytest.skip("no kernel thread is visible in this pid namespace")
    with pytest.raises(TargetRefused, match="not a kernel thread"):
        partial.check_pid(kthread, canary=True)


def test_schedagent_itself_is_refused_as_a_canary() -> None:
    with pytest.raises(TargetRefused, match="schedagent itself"):
        partial.check_pid(os.getpid(), canary=True)


def test_a_nonexistent_pid_is_refused_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path))
    with pytest.raises(TargetGone):
        ops.call("load_policy", {"policy": "vtime", "pid": 4_190_000}, "test")


def test_a_user_process_passes_and_a_strangers_process_is_invisible(sleeper: int) -> None:
    partial.check_pid(sleeper, canary=True)  # root's own child: a fine canary
    token = ops.CALLER_UID.set(65534)
    try:
        # a socket peer of another uid learns only "no such process"
        args = ops.validate("profile_workload", {"pid": sleeper})
        assert isinstance(args, ops.ProfileArgs)
        with pytest.raises(TargetGone):
            ops.check_target(args)
    finally:
        ops.CALLER_UID.reset(token)


def test_the_engine_refuses_pid_1_as_a_canary_before_loading(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        with (
            pytest.raises(TargetRefused),
            engine.session(engine.RunRequest("vtime", {}, Target(pid=1)), store),
        ):
            pass
    finally:
        store.close()


# --- the daemon socket --------------------------------------------------------------------


def _echo(op: str, args: dict[str, Any], actor: str) -> dict[str, Any]:
    return {"op": op}


def _read_reply(sock: socket.socket, timeout_s: float = 20.0) -> dict[str, Any]:
    sock.settimeout(timeout_s)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return dict(json.loads(data))


def test_an_idle_connection_flood_is_capped_and_refused_at_accept(tmp_path: Path) -> None:
    """Issue 12: 200 idle connections held 200 threads forever (3 -> 203)."""
    before = threading.active_count()
    with _api(tmp_path, _echo, max_connections=4, request_timeout_s=30.0) as path:
        idle = []
        try:
            for _ in range(4):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(path))
                idle.append(s)
            _wait(lambda: threading.active_count() >= before + 1 + 4)
            refused = []
            for _ in range(20):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(path))
                refused.append(_read_reply(s))
                s.close()
            assert all(r["kind"] == "DaemonBusy" and "retry" in r["error"] for r in refused)
            # the server thread plus one per admitted connection, never one per attempt
            assert threading.active_count() <= before + 1 + 4
        finally:
            for s in idle:
                s.close()
        # a slot comes back when a connection ends
        _wait(lambda: _try_status(path))


def _try_status(path: Path) -> bool:
    try:
        return ApiClient(path).call("status", {}) == {"op": "status"}
    except SchedagentError:
        return False


def test_a_slow_client_is_dropped_after_the_request_timeout(tmp_path: Path) -> None:
    with _api(tmp_path, _echo, request_timeout_s=0.5) as path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(b'{"op": "status", "ar')  # and never the rest, nor a newline
            reply = _read_reply(s)
            assert reply["ok"] is False and "no request line within" in reply["error"]
            assert s.recv(1) == b""  # and the connection is closed
        assert ApiClient(path).call("status", {}) == {"op": "status"}


#: a stdlib-only client run as `nobody` by the system Python (the venv lives under /root)
NOBODY_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"op": "status", "args": {}}\\n')
except (BrokenPipeError, ConnectionResetError):
    pass
print(s.makefile().readline().strip())
"""


def test_an_unauthorised_peer_gets_nothing_and_no_priority_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: each connection thread was raised to SCHED_FIFO before authorisation."""
    python = "/usr/bin/python3"
    if not Path(python).exists():
        pytest.skip("needs the system python3 to run a client as nobody")
    raised: list[str] = []
    monkeypatch.setattr(
        procstat, "raise_priority", lambda: raised.append(threading.current_thread().name) or "x"
    )
    called: list[str] = []

    def handler(op: str, args: dict[str, Any], actor: str) -> dict[str, Any]:
        called.append(op)
        return {"secret": SECRET}

    shared = Path(tempfile.mkdtemp(prefix="schedagent-sock-"))  # nobody can reach /tmp
    shared.chmod(0o755)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, shared, True)
        path = cleanup.enter_context(_api(shared, handler))
        path.chmod(0o666)  # as if the file mode were loosened: SO_PEERCRED still refuses
        out = subprocess.run(
            [python, "-c", NOBODY_CLIENT, str(path)],
            capture_output=True,
            text=True,
            check=False,
            user=65534,
            group=65534,
            cwd="/",
        )
        reply = json.loads(out.stdout)
        assert reply["kind"] == "PermissionDenied" and "SECRET" not in out.stdout
        assert called == [] and raised == []
        assert ApiClient(path).call("status", {})["secret"] == SECRET  # root is served
        assert called == ["status"] and len(raised) == 1


# --- the command matcher ------------------------------------------------------------------


def test_a_decoy_of_another_user_is_not_matched(tmp_path: Path) -> None:
    """Issue 12: the oldest matching process of ANY user was chosen, so a local user could
    plant an older look-alike for the root daemon to tune."""
    marker = f"schedagent-decoy-{os.getpid()}"
    decoy = subprocess.Popen(["/bin/sh", "-c", "sleep 60", marker], user=65534, group=65534)
    real = None
    try:
        _wait(lambda: marker in " ".join(psutil.Process(decoy.pid).cmdline()))
        real = subprocess.Popen(["/bin/sh", "-c", "sleep 60", marker])
        _wait(lambda: marker in " ".join(psutil.Process(real.pid).cmdline()))
        assert psutil.Process(decoy.pid).create_time() <= psutil.Process(real.pid).create_time()
        root_match = config.Match(command=marker, user="root")
        assert matcher.find(root_match) == Target(pid=real.pid)
        # the same pattern for nobody's processes finds the decoy: the owner decides
        assert matcher.find(config.Match(command=marker, user=65534)) == Target(pid=decoy.pid)
    finally:
        for proc in (decoy, real):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_command_pattern_without_an_owner_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("targets: [{name: a, match: {command: my-server}}]\n")
    with pytest.raises(ConfigError, match="needs user:"):
        config.load(path)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a+)+$", "nest repeats"),
        (r"(a*)*b", "nest repeats"),
        (r"(?:x+y?)+z", "nest repeats"),
        (r"(a|ab)*c", "repeat an alternation"),
        (r"(a|aa)+$", "repeat an alternation"),
        (r"(x)\1", "back-references"),
        (r"a.*a.*x", "at most one is allowed"),
    ],
)
def test_a_catastrophic_regex_is_refused_at_config_load(
    tmp_path: Path, pattern: str, why: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        json.dumps({"targets": [{"name": "a", "match": {"command": pattern, "user": "root"}}]})
    )
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert why in str(err.value), str(err.value)


def test_an_ordinary_pattern_is_accepted_and_the_subject_is_bounded() -> None:
    for pattern in ("my-server --port 8080", r"python3? .*manage\.py", r"worker-\d+"):
        config.check_pattern(pattern)
    assert config.MAX_CMDLINE_CHARS <= 4096


# --- LLM budgets --------------------------------------------------------------------------


def _llm_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: Any = None
) -> tuple[Any, Store, Any]:
    from tests.unit.test_llm_agent import RUNQ, agent_loop
    from tests.unit.test_tune_loop import World

    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path))
    return agent_loop(tmp_path, world or World(RUNQ, {}))


def _many(name: str, args: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "content": [
            {"type": "tool_use", "id": f"u{i}", "name": name, "input": args} for i in range(n)
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 10},
    }


def test_fifty_tool_calls_in_one_response_run_at_most_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: the budget was checked between responses: 50 calls ran with budget 5."""
    from schedagent.agent import llm

    loop, _store, rep = _llm_setup(tmp_path, monkeypatch)
    ran: list[str] = []
    original = llm.Tools.call

    def counting(self: llm.Tools, name: str, args: Any) -> str:
        ran.append(name)
        return original(self, name, args)

    monkeypatch.setattr(llm.Tools, "call", counting)
    transport = llm.ScriptedTransport([_many("list_policies", {}, 50)])
    cost = llm.run(loop, transport, ["x"], llm.Budget(max_tool_calls=5), model="m")
    assert len(ran) == 5 and cost.tool_calls == 5
    assert rep.ended == "budget" and "tool-call budget of 5" in rep.end_note
    assert len(transport.requests) == 1  # the run ended; the model was not asked again
    assert rep.decision is not None and rep.decision.policy == "eevdf"


def test_forty_verify_calls_stop_at_the_verify_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: 40 verify calls (clang + verifier each) ran with a synthesis budget of 3."""
    from schedagent.agent import llm
    from tests.unit.test_llm_agent import RUNQ
    from tests.unit.test_tune_loop import World

    world = World(RUNQ, {})  # its verify stands in for clang and the kernel verifier
    loop, _store, _rep = _llm_setup(tmp_path, monkeypatch, world)
    compiled = world.verified
    script = [
        _many("verify", {"policy": "vtime"}, 40),
        {
            "content": [
                {
                    "type": "tool_use",
                    "id": "f",
                    "name": "finish",
                    "input": {"policy": "eevdf", "reasoning": "r"},
                }
            ],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    ]
    transport = llm.ScriptedTransport(script)
    llm.run(loop, transport, ["x"], llm.Budget(max_tool_calls=100, max_verify_calls=3), model="m")
    assert len(compiled) == 3
    results = [
        c
        for m in transport.requests[-1]["messages"]
        if m["role"] == "user" and isinstance(m["content"], list)
        for c in m["content"]
    ]
    refused = [r for r in results if r["is_error"]]
    assert len(refused) == 37 and "verify budget used (3 calls)" in refused[0]["content"]


# --- store failures -----------------------------------------------------------------------


class _FakeObj:
    def __init__(self, log: list[str]) -> None:
        self.log, self.loaded = log, True

    def close(self) -> None:
        self.log.append("obj.close")
        self.loaded = False

    def maps(self) -> dict[str, Any]:
        return {}

    def percpu_stats(self) -> list[int]:
        return []


class _FakeSched:
    name, enable_seq = "vtime", 7

    def __init__(self, obj: _FakeObj) -> None:
        self.obj, self.log = obj, obj.log

    def detach(self, timeout_s: float = 0) -> None:
        self.log.append("detach")


class _BrokenStore(Store):
    """A store whose disk turned read-only just after the attach."""

    def set_active(self, rec: Any) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")


def test_a_store_failure_after_attach_detaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: a store error between attach() and the guarded try left it attached."""
    from schedagent.kernel import scx

    log: list[str] = []
    obj = _FakeObj(log)
    policy = type("P", (), {"name": "vtime", "source_hash": lambda self: "h"})()
    monkeypatch.setattr(
        engine, "_require_sched_ext", lambda: scx.ScxState(True, "disabled", None, 6, False, 0)
    )
    # fakes stand in for the gate report, the build and the kernel object
    prepared = engine.Prepared(policy, None, None, obj, {}, ())  # type: ignore[arg-type]
    monkeypatch.setattr(engine, "_prepare", lambda *a: prepared)
    monkeypatch.setattr(cgroupfs, "CGROUP_ROOT", tmp_path / "no-cgroup-fs")  # no host controls
    monkeypatch.setattr(engine, "attach", lambda o, opts, fill: _FakeSched(obj))
    monkeypatch.setattr(
        engine,
        "KmsgReader",
        lambda: type("K", (), {"close": lambda self: log.append("kmsg.close")})(),
    )
    monkeypatch.setattr(engine, "rollback", lambda sched: log.append("rollback"))
    store = _BrokenStore(tmp_path / "s.db")
    try:
        with (
            pytest.raises(sqlite3.OperationalError),
            engine.session(engine.RunRequest("vtime", {}, switch_all=True), store),
        ):
            raise AssertionError("the session must not start without its record")
    finally:
        store.close()
    assert {"rollback", "detach", "obj.close", "kmsg.close"} <= set(log), log


def _scx_tree(root: Path, state: str, ops_name: str = "vtime", seq: int = 5) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "root").mkdir(exist_ok=True)
    (root / "state").write_text(state + "\n")
    (root / "root" / "ops").write_text(ops_name + "\n")
    (root / "enable_seq").write_text(f"{seq}\n")
    return root


@pytest.fixture
def corrupted_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "schedagent.db").write_bytes(b"this is not a database\x00" * 512)
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(state))
    return state


def test_a_corrupted_store_is_a_clear_error(corrupted_state: Path) -> None:
    with pytest.raises(StoreUnavailable, match="rollback` still works without it"):
        services.open_store()


def test_rollback_with_a_corrupted_store_uses_the_kernels_view(
    corrupted_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emergency, "SCX_ROOT", _scx_tree(tmp_path / "scx", "disabled"))
    result = services.rollback()
    assert result.action == "nothing active" and "store was not used" in result.note


HOLDER = """
import os, signal, sys, time
state = sys.argv[1]
def stop(*_):
    with open(state + ".tmp", "w") as out:  # what the kernel does when the link closes
        out.write("disabled\\n")
    os.replace(state + ".tmp", state)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("argv0", ["schedagent", "someone-elses-scheduler"])
def test_rollback_without_a_store_signals_only_schedagents_link_holder(
    corrupted_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv0: str
) -> None:
    scx_root = _scx_tree(tmp_path / "scx", "enabled")
    monkeypatch.setattr(emergency, "SCX_ROOT", scx_root)
    holder = subprocess.Popen(
        [
            "/bin/bash",
            "-c",
            f'exec -a {argv0} "$0" "$@"',
            sys.executable,
            "-c",
            HOLDER,
            str(scx_root / "state"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        # the kernel's fdinfo names the holder of the struct_ops link
        monkeypatch.setattr(emergency, "struct_ops_link_holders", lambda: [holder.pid])
        if argv0 != "schedagent":
            with pytest.raises(SchedExtBusy):
                services.rollback()
            assert holder.poll() is None  # not ours: left alone
            return
        result = services.rollback()
        assert (
            result.action.startswith("SIGTERM to link holder")
            and result.state_after == "disabled"
            and "store was not used" in result.note
        )
        assert holder.wait(10) == 0
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_rollback_cli_works_with_a_corrupted_store_and_says_so(corrupted_state: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "schedagent", "rollback"],
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "SCHEDAGENT_STATE_DIR": str(corrupted_state),
            "SCHEDAGENT_SOCKET": str(corrupted_state / "none.sock"),
        },
    )
    if (
        Path("/sys/kernel/sched_ext/state").exists()
        and "enabled" in Path("/sys/kernel/sched_ext/state").read_text()
    ):
        pytest.skip("a scheduler is attached on this host; the fake-tree tests cover it")
    assert out.returncode == 0, out.stderr
    assert "rollback: nothing active" in out.stdout and "store was not used" in out.stdout


def test_rollback_works_when_the_state_directory_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", "/proc/self")  # read-only, even for root
    monkeypatch.setattr(emergency, "SCX_ROOT", _scx_tree(tmp_path / "scx", "disabled"))
    result = services.rollback()
    assert result.action == "nothing active" and "store was not used" in result.note


def test_sigterm_releases_every_target_when_the_store_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's stop path: each policy detaches even if recording it fails."""
    from schedagent.daemon.service import Daemon, _Active

    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "c.yaml"
    path.write_text(
        "targets: [{name: a, match: {command: x, user: root}}, "
        "{name: b, match: {command: y, user: root}}]\n"
        f"socket: {tmp_path / 'd.sock'}\n"
    )
    store = Store(tmp_path / "state" / "schedagent.db")
    daemon = Daemon(config.load(path), store)
    detached: list[str] = []
    for name, ts in daemon.targets.items():
        stack = contextlib.ExitStack()
        stack.callback(detached.append, name)  # what the engine's teardown does first
        ts.active = _Active(
            "vtime",
            "vtime",
            {},
            None,
            1.0,
            stack,
            None,  # type: ignore[arg-type]
            time.time(),
        )
    store.close()  # every later write fails: sqlite3.ProgrammingError
    daemon._shutdown()
    assert sorted(detached) == ["a", "b"]
    assert all(ts.active is None for ts in daemon.targets.values())


def test_the_unit_keeps_state_and_cache_private_and_bpffs_read_only() -> None:
    unit = (Path(__file__).resolve().parents[2] / "scripts" / "schedagent.service").read_text()
    for line in (
        "StateDirectory=schedagent",
        "CacheDirectory=schedagent",
        "UMask=0077",
        "SCHEDAGENT_CACHE_DIR=/var/cache/schedagent",
        "ProtectControlGroups=yes",
    ):
        assert line in unit, line
    read_only = next(ln for ln in unit.splitlines() if ln.startswith("ReadOnlyPaths="))
    assert "/sys/fs/bpf" in read_only.split("=", 1)[1].split()
