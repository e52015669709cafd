"""The embedded local stack: moto on 127.0.0.1 with the resources of template.yaml and the
Lambda handler behind a local SQS event source (``captioner_tools.local.stack.LocalStack``).

Its libraries (moto's server, PyYAML, scikit-image for the demo's photos) are the
distribution's ``local`` extra: call ``require_extra()`` before importing ``stack``.
"""

from __future__ import annotations

from importlib.util import find_spec

from captioner_tools.errors import MissingExtra

EXTRA = "local"
EXTRA_MODULES = ("moto", "flask", "yaml", "skimage")  # flask: moto's server


def require_extra() -> None:
    """Raise ``MissingExtra`` (one line, naming the extra) unless the extra is installed."""
    if any(find_spec(module) is None for module in EXTRA_MODULES):
        raise MissingExtra("the local stack", EXTRA)
