"""The embedded local stack: moto on 127.0.0.1 with the resources of template.yaml.

``from captioner.local import LocalStack`` (see ``captioner.local.stack``). The import is
lazy so that reading the template (``captioner.local.template``) does not load moto.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalStack", "LocalStackError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from captioner.local import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
