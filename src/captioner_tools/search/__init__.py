"""Ranking search results by meaning, offline, in the command line tool only (never in the
Lambda package): a sentence-embedding model from a PyPI wheel (``MODEL.md``)."""
