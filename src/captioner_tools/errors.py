"""Errors the tools raise on purpose. Each is a problem the user can fix: the command line
prints its message as it is, on one line (``captioner_tools.cli.errors.describe``)."""

from __future__ import annotations


class ToolError(Exception):
    """Base class: the message is complete and fits on one line."""


class CliError(ToolError):
    """A mistake on the command line (an argument, a flag, a missing resource name)."""


class LocalStackError(ToolError):
    """The local stack cannot start (port in use, template problem, already running)."""


class TemplateError(LocalStackError):
    """The template is missing or lacks something the local stack needs."""


class MissingExtra(ToolError):
    """An optional part of the distribution is not installed."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'captioner[{extra}]'")
        self.extra = extra
