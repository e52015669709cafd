"""Captioner's tools: the ``captioner`` command line (``cli``) and the embedded local stack
(``local``). They use the function package (``captioner``); it never imports them, and
nothing here is deployed to Lambda."""
