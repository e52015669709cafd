"""``doctor``: one line per check of whether the deployment can work (``captioner_tools.doctor``)."""

from __future__ import annotations

import typer
from rich.markup import escape

from captioner_tools.cli import render
from captioner_tools.cli.options import JsonOpt, deployment_of
from captioner_tools.doctor import healthy, run_checks

STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check that the deployment can work, and say how to fix what cannot.

    AWS credentials, region and endpoint; the stack and its outputs; each provider's key
    readable and the provider reachable with it (one unpaid call: ModelsLab's fetch of a job
    that does not exist, OpenAI's model list, Bedrock's GetFoundationModel); every bucket the
    stack serves readable, sending its events and readable by the function's role; the queue
    and the dead-letter queue; today's spend against the cap; PENDING rows nothing works on.
    Exit code 0 when no check fails (warnings included), 1 otherwise: run it after a deploy.
    """
    deployment = deployment_of(ctx)
    checks = run_checks(deployment)
    ok = healthy(checks)
    if as_json:
        render.print_json({"healthy": ok, "checks": [c.as_dict() for c in checks]})
    else:
        for check in checks:
            line = f"[{STYLES[check.status]}]{check.status:<4}[/] {escape(check.name)}: {escape(check.detail)}"
            if check.fix and check.status != "ok":
                line += f" [dim]→ fix:[/] {escape(check.fix)}"
            render.out.print(line, soft_wrap=True)
    if not ok:
        raise typer.Exit(1)
