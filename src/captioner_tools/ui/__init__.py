"""``captioner ui``: a local gallery of a deployment's captions (the ``ui`` extra).

``app.py`` (routes), ``rows.py`` (which rows a view shows, cursor paging), ``thumbnails.py``
(server-made thumbnails, cached), ``guard.py`` (Host check, per-run token, CSP),
``server.py`` (binding and the printed URL). Templates and the vendored htmx are package data.
"""
