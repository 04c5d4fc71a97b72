"""``schedagent sandbox``: build and boot the sched_ext testbed VM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from schedagent.sandbox import image, runner

app = typer.Typer(
    help="The sched_ext micro-VM testbed (for hosts without sched_ext).", no_args_is_help=True
)


def _progress(msg: str) -> None:
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)


@app.command()
def build(force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False) -> None:
    """Build (or reuse) the guest root: Debian unstable kernel, BPF toolchain, bcc, tools."""
    img = image.build_image(force=force, progress=_progress)
    print(img.root)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    cmd: Annotated[list[str], typer.Argument(help="Command to run in the guest (after --).")],
    cpus: Annotated[int, typer.Option(min=1, max=64, help="Guest CPUs.")] = 2,
    memory: Annotated[str, typer.Option(help="Guest memory, e.g. 4G.")] = "4G",
    timeout_s: Annotated[float, typer.Option(min=10, help="Kill the guest after this.")] = 1800,
) -> None:
    """Boot the testbed, run CMD as root in this directory, and exit with its exit code."""
    spec = runner.VmSpec(cpus=cpus, memory=memory, timeout_s=timeout_s, cwd=Path.cwd())
    # SIGTERM/SIGHUP (a CI timeout, a closed terminal) must still power the guest off:
    # raising lets the runner's cleanup kill the VM's process group.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    result = runner.run(cmd, spec, progress=_progress)
    _progress(
        f"command exited with {result.exit_code} after {result.total_s:.1f} s "
        f"(boot {result.boot_s:.1f} s); console log: {result.console_log}"
    )
    raise typer.Exit(result.exit_code)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@app.command()
def shell(
    cpus: Annotated[int, typer.Option(min=1, max=64)] = 2,
    memory: Annotated[str, typer.Option()] = "4G",
) -> None:
    """Boot the testbed with an interactive shell in this directory."""
    spec = runner.VmSpec(cpus=cpus, memory=memory, cwd=Path.cwd())
    raise typer.Exit(runner.shell(spec, progress=_progress))
