"""The ``captioner`` command line tool (Typer + Rich); never imported by the Lambda code.

Commands live in ``commands_*.py`` modules, each with a ``register(app)`` function that
``captioner_tools.cli.app`` calls for every such module it finds.
"""
