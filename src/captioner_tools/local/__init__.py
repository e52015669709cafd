"""The embedded local stack: moto on 127.0.0.1 with the resources of template.yaml.

``from captioner_tools.local import LocalStack`` (see ``captioner_tools.local.stack``). The import is
lazy so that reading the template (``captioner_tools.local.template``) does not load moto.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalStack", "LocalStackError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from captioner_tools.local import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
