"""The console: a web page where approvers, rule owners, managers, HR and
operations do their work as themselves (DOMAIN.md §8).

Shape, like the services: `views.py`/`i18n.py`/`charts.py`/`access.py` are
pure (no HTTP, no gRPC), `backend.py` is the one module that calls gRPC,
`web.py` is the thin HTTP edge and `__main__.py` the composition root.
"""
