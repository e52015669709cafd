"""``--ui`` of ``local up`` and ``demo``: the gallery beside the local stack, in the same
process (a thread), on 127.0.0.1 and a free port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from captioner_tools.cli.commands_ui import require_ui
from captioner_tools.cli.render import out
from captioner_tools.cli.target import Deployment, TargetOptions

if TYPE_CHECKING:
    from captioner_tools.local.stack import LocalStack
    from captioner_tools.ui.server import Running

HINT = "see them in the gallery: scripts/demo --ui (or captioner local up --ui)"


def start_gallery(stack: LocalStack, port: int = 0) -> Running:
    require_ui()
    from captioner_tools.ui.server import start

    deployment = Deployment(
        TargetOptions(
            endpoint_url=stack.endpoint_url,
            bucket=stack.bucket,
            table=stack.table,
            queue_url=stack.queue_url,
            dlq_url=stack.dlq_url,
        )
    )
    running = start(deployment, "127.0.0.1", port)
    out.print(f"Captioner gallery on {running.url}", soft_wrap=True, markup=False)
    return running
