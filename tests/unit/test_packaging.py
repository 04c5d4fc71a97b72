"""The wheel carries everything an installed schedagent needs (issue 14).

Built from a copy of the checkout and installed into a fresh venv, the console
script run from ``/`` must find the built-in policies, their YAML and the BPF
headers without any checkout on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from schedagent.config import PROJECT_ROOT

_SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    "out",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
)


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_wheel_installed_outside_the_checkout_has_policies_and_headers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(PROJECT_ROOT, src, ignore=_SKIP)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheels"),
            str(src),
        ],
        cwd=tmp_path,
    )
    wheel = next((tmp_path / "wheels").glob("schedagent-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    # The fresh venv gets its dependencies from this one's site-packages through a .pth
    # line (a plain path entry: this venv's own .pth files, the editable install of the
    # checkout among them, are not processed), and schedagent only from the wheel.
    purelib = Path(sysconfig.get_paths()["purelib"])
    vpy = venv / "bin" / "python"
    code = "import sysconfig;print(sysconfig.get_paths()['purelib'])"
    vsite = Path(_run([str(vpy), "-c", code], cwd=tmp_path).strip())
    (vsite / "deps-from-test-venv.pth").write_text(f"{purelib}\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(vpy),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        cwd=tmp_path,
    )
    shutil.rmtree(src)  # nothing may still point into the copy it was built from
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SCHEDAGENT_CACHE_DIR"] = str(tmp_path / "cache")
    where = _run(
        [str(vpy), "-c", "import schedagent.config as c;print(c.DATA_ROOT)"], cwd=Path("/"), env=env
    ).strip()
    assert Path(where).is_relative_to(venv), where
    script = str(venv / "bin" / "schedagent")
    listed = json.loads(_run([script, "policies", "list", "--json"], cwd=Path("/"), env=env))
    names = {p["name"] for p in listed}
    builtin = {d.name for d in (PROJECT_ROOT / "policies").iterdir() if d.is_dir()}
    assert names >= builtin, (names, builtin)
    shown = json.loads(
        _run([script, "policies", "show", "target", "--json"], cwd=Path("/"), env=env)
    )
    assert shown["name"] == "target"
    assert "target_slice_ns" in json.dumps(shown)
    headers = Path(where) / "bpf" / "schedagent"
    assert (headers / "common.bpf.h").is_file()
    assert (Path(where) / "bpf" / "probes" / "schedlat.bcc.c").is_file()
