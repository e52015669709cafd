"""``python -m captioner_tools.cli``: the ``captioner`` command."""

from captioner_tools.cli.app import main

main()
