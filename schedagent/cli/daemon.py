"""``schedagent daemon``, ``approve``, ``history`` and ``mcp``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from schedagent.cli.common import JsonOpt, client, spec_option
from schedagent.cli.output import emit_json, fail
from schedagent.client import socket_path
from schedagent.daemon import config as daemon_config
from schedagent.errors import ConfigError
from schedagent.opspec import HistoryArgs


def daemon(
    config: Annotated[
        Path, typer.Option(help="The daemon's YAML configuration.")
    ] = daemon_config.DEFAULT_PATH,
    check: Annotated[bool, typer.Option("--check", help="Validate the config and exit.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Keep the configured targets tuned and guarded (runs until SIGTERM)."""
    from schedagent.daemon import service

    try:
        cfg = daemon_config.load(config)
        if check:
            if json_out:
                emit_json(json.loads(cfg.model_dump_json()))
            else:
                print(
                    f"{config}: valid; mode {cfg.mode}, {len(cfg.targets)} target(s): "
                    + ", ".join(t.name for t in cfg.targets)
                )
            return
        if "SCHEDAGENT_SOCKET" in os.environ:
            cfg = cfg.model_copy(update={"socket": socket_path()})
        service.run(cfg)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)


def approve(
    proposal: Annotated[int, typer.Argument(help="Proposal id (see `history`).")],
    json_out: JsonOpt = False,
) -> None:
    """Apply a proposal the daemon made in `propose` mode, under its guard."""
    try:
        result = client(json_out).call("approve", {"id": proposal})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(result)
        return
    for name, t in result["targets"].items():
        print(f"{name}: {t['policy']} ({t['phase']})")


def _fmt_ts(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def history(
    limit: Annotated[int, spec_option(HistoryArgs, "limit")] = 30, json_out: JsonOpt = False
) -> None:
    """The audit trail: every decision with its trigger, evidence, change and outcome."""
    try:
        data = client(json_out).call("history", {"limit": limit})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(data)
        return
    for rec in data["audit"]:
        result = rec["result"] if isinstance(rec["result"], dict) else {}
        target = (rec["args"] or {}).get("target") if isinstance(rec["args"], dict) else None
        summary = result.get("trigger") or ""
        outcome = result.get("outcome") or result.get("error") or ""
        diff = result.get("diff") or ""
        print(
            f"{_fmt_ts(rec['ts'])} {rec['actor']:<8} {rec['action']:<13} "
            f"{target or '-':<12} {summary} {diff} {outcome}".rstrip()
        )
        if result.get("rationale"):
            print(f"{'':>20} why: {result['rationale']}")
    pending = [p for p in data["proposals"] if p["status"] == "pending"]
    for p in pending:
        print(
            f"pending proposal {p['id']}: {p['target']} -> {p['policy']} {p['tunables']} "
            f"(schedagent approve {p['id']})"
        )


def mcp(
    transport: Annotated[str, typer.Option(help="stdio or http.")] = "stdio",
    host: Annotated[
        str, typer.Option(help="http: address to bind (loopback unless you mean it).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="http: port.")] = 8765,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="http: bearer-token file (created 0600; default <state dir>/mcp-http.token)."
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="http: serve without a token (refused as root).")
    ] = False,
) -> None:
    """Serve schedagent's tools to coding agents over MCP (delegates to the daemon when it
    runs, so the server itself needs no privilege). Over HTTP every request needs the
    bearer token whose file path is printed at start."""
    try:
        if transport not in ("stdio", "http"):
            raise ConfigError(f"--transport {transport!r}: valid choices are stdio and http")
        from mcp_server import server

        server.serve(transport, host, port, token_file=token_file, auth=not no_auth)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err)
