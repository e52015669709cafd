"""The ``captioner`` command line tool (Typer + Rich); never imported by the Lambda code.

``app.py`` registers the commands, which live in ``commands_*.py``; ``options.py`` declares
the options several commands share.
"""
