"""The ``schedagent`` command line: thin adapters over the operations table (``schedagent.client``)."""

from __future__ import annotations

import logging
import os
import sys

import typer

from schedagent.cli import bench as bench_cmd
from schedagent.cli import daemon as daemon_cmd
from schedagent.cli import doctor as doctor_cmd
from schedagent.cli import engine as engine_cmd
from schedagent.cli import interventions as interventions_cmd
from schedagent.cli import profile as profile_cmd
from schedagent.cli import sandbox as sandbox_cmd
from schedagent.cli import tune as tune_cmd
from schedagent.cli.output import fail

app = typer.Typer(
    name="schedagent",
    help="An agentic tuner for the Linux CPU scheduler, built on sched_ext.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(sandbox_cmd.app, name="sandbox")
app.add_typer(engine_cmd.policies_app, name="policies")
app.add_typer(bench_cmd.app, name="bench")
app.command("doctor")(doctor_cmd.doctor)
app.command("profile")(profile_cmd.profile)
app.command("tune")(tune_cmd.tune)
app.command("interventions")(interventions_cmd.interventions)
app.command("knob")(interventions_cmd.knob)
app.command("status")(engine_cmd.status)
app.command("rollback")(engine_cmd.rollback)
app.command("daemon")(daemon_cmd.daemon)
app.command("approve")(daemon_cmd.approve)
app.command("history")(daemon_cmd.history)
app.command("mcp")(daemon_cmd.mcp)


def main() -> None:
    """Console-script entry point: set up logging, run, map errors to exit codes."""
    level = os.environ.get("SCHEDAGENT_LOG", "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        app()
    except Exception as err:  # noqa: BLE001  (CLI entry: every error becomes a message + exit code)
        fail(err, json_out="--json" in sys.argv)
