"""Options that more than one command takes, declared once.

Every command that talks to a deployment is registered with ``cls=DeploymentCommand``: it
then accepts the deployment options after its own (``captioner list --endpoint-url ...``),
listed in their own help panel, and reads them with ``deployment_of(ctx)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from captioner_tools.cli.target import Deployment, TargetOptions

# -- output and limits (get, list, search) ------------------------------------------------------

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
LimitOpt = Annotated[
    int, typer.Option("--limit", "-n", min=0, help="Most rows to print (0 = no limit).")
]

# -- the local stack (local up, demo) ------------------------------------------------------------

ProviderOpt = Annotated[
    str | None,
    typer.Option(
        help="modelslab or local \\[default: modelslab if MODELSLAB_API_KEY is set, else local]."
    ),
]
TemplateOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="CAPTIONER_TEMPLATE",
        help="template.yaml to build from \\[default: ./template.yaml, else the repository's].",
    ),
]
VisibilityOpt = Annotated[
    int,
    typer.Option(
        min=0,
        max=43200,
        help="Seconds a failed message stays invisible before it is retried "
        "(AWS: the queue's 360 s).",
    ),
]

# -- the deployment (every command that talks to AWS or the local stack) -------------------------

PANEL = "Deployment (flags, else environment, else stack outputs)"


def _option(*decls: str, envvar: str | None = None, help: str) -> Any:
    return typer.Option(*decls, envvar=envvar, help=help, rich_help_panel=PANEL, show_default=False)


EndpointUrlOpt = Annotated[
    str | None,
    _option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        help="AWS endpoint, e.g. the local stack's http://127.0.0.1:4566.",
    ),
]
RegionOpt = Annotated[str | None, _option("--region", envvar="AWS_REGION", help="AWS region.")]
ProfileOpt = Annotated[
    str | None, _option("--profile", envvar="AWS_PROFILE", help="AWS CLI profile.")
]
StackNameOpt = Annotated[
    str | None,
    _option(
        "--stack-name",
        envvar="CAPTIONER_STACK_NAME",
        help="CloudFormation stack whose outputs name the resources "
        "\\[default: samconfig.toml's stack_name, else captioner].",
    ),
]
BucketOpt = Annotated[
    str | None, _option("--bucket", envvar="CAPTIONER_BUCKET", help="Upload bucket.")
]
TableOpt = Annotated[
    str | None, _option("--table", envvar="CAPTIONS_TABLE", help="Captions table.")
]
QueueUrlOpt = Annotated[
    str | None, _option("--queue-url", envvar="CAPTIONER_QUEUE_URL", help="Caption queue URL.")
]
DlqUrlOpt = Annotated[
    str | None, _option("--dlq-url", envvar="CAPTIONER_DLQ_URL", help="Dead-letter queue URL.")
]


def deployment_options(
    endpoint_url: EndpointUrlOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    stack_name: StackNameOpt = None,
    bucket: BucketOpt = None,
    table: TableOpt = None,
    queue_url: QueueUrlOpt = None,
    dlq_url: DlqUrlOpt = None,
) -> TargetOptions:
    """The deployment options, as Typer reads them (``DeploymentCommand`` adds them)."""
    return TargetOptions(endpoint_url, region, profile, stack_name, bucket, table, queue_url,
                         dlq_url)  # fmt: skip


def _deployment_params() -> list[Any]:
    """``deployment_options``'s parameters as Typer makes them for any command, so they
    parse and print exactly like the command's own options."""
    probe = typer.Typer(add_completion=False)
    probe.command()(deployment_options)
    return list(typer.main.get_command(probe).params)


_DEPLOYMENT_KEY = "captioner.deployment"


class DeploymentCommand(TyperCommand):
    """A command that also takes the deployment options, after its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared = _deployment_params()
        self.params.extend(self.shared)

    def invoke(self, ctx: Any) -> Any:
        values = {p.name: ctx.params.pop(p.name, None) for p in self.shared if p.name}
        ctx.meta[_DEPLOYMENT_KEY] = Deployment(deployment_options(**values))
        return super().invoke(ctx)


def deployment_of(ctx: typer.Context) -> Deployment:
    """The deployment the command's options name (only under ``DeploymentCommand``)."""
    deployment: Deployment = ctx.meta[_DEPLOYMENT_KEY]
    return deployment
