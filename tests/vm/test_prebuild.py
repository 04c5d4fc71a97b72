"""Issue 14: compiles are ready before they are needed, and the fresh path still works.

The image carries vmlinux.h and every built-in policy compiled for its kernel (made at
image build, natively, by the guest's own toolchain). A tune must find them there. And
with that prepared set hidden and an empty cache, the path a real host takes the first
time (vmlinux.h from the running kernel's BTF, then clang) must still produce an object
the kernel loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from schedagent.config import DEFAULT_PREBUILT_DIR
from schedagent.kernel import scx, toolchain
from schedagent.policy import repo
from tests.vm.conftest import PROJECT


def test_image_carries_vmlinux_h_and_every_builtin_object_for_this_kernel() -> None:
    build_id = toolchain.kernel_build_id()
    assert (DEFAULT_PREBUILT_DIR / "vmlinux" / build_id / "vmlinux.h").is_file(), (
        f"no prebuilt vmlinux.h for the running kernel {build_id}"
    )
    # run in a child with the prepared set as its only cache: every built-in policy of
    # the checkout must be found ready, keyed by this kernel's build id
    code = (
        "import json\nfrom schedagent.kernel import toolchain\n"
        "from schedagent.policy import repo\n"
        "out = {n: toolchain.compile_source(repo.resolve(n).source).cached "
        "for n in repo.builtin_names()}\nprint(json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "SCHEDAGENT_CACHE_DIR": str(DEFAULT_PREBUILT_DIR),
        "SCHEDAGENT_PREBUILT_DIR": "/nonexistent",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cached = json.loads(proc.stdout)
    assert set(cached) == set(repo.builtin_names())
    stale = [name for name, hit in cached.items() if not hit]
    # a policy edited after the image was built compiles again; the rest must be ready
    assert len(stale) < len(cached), f"no prebuilt object matched: {stale}"


def test_fresh_compile_path_without_prebuilt_objects_loads_in_the_kernel(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SCHEDAGENT_CACHE_DIR": str(tmp_path / "cache"),
        "SCHEDAGENT_PREBUILT_DIR": str(tmp_path / "none"),
        "SCHEDAGENT_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.run(
        ["schedagent", "policies", "verify", "fifo", "--json"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["object_cached"] is False
    assert Path(result["object_path"]).is_relative_to(tmp_path / "cache")
    headers = list((tmp_path / "cache" / "vmlinux").glob("*/vmlinux.h"))
    assert len(headers) == 1 and headers[0].stat().st_size > 1_000_000
    assert result["gates"][-1] == "kernel verifier"
    # verify loads without attaching: the kernel must still be on EEVDF
    assert scx.read_state().state == "disabled"
