"""The operators' review station, ``inspector review`` (docs/REVIEW.md §2–3).

What lives here, one concern per module:

* :mod:`~workers.review.app`: the FastAPI app (``create_app``): pages, JSON, evidence images, sign-in.
* :mod:`~workers.review.security`: signed session cookies, CSRF tokens, roles, sign-in throttling.
* :mod:`~workers.review.users`: the users file (names, roles, argon2 hashes).
* :mod:`~workers.review.station`: the review without HTTP: part lookup, saving a decision and its label.
* :mod:`~workers.review.queue`: the queue of NG parts read from the Redis results stream.
* :mod:`~workers.review.decisions`: the latest decision in Redis and the append-only audit log.
* :mod:`~workers.review.metrics`: ``inspector_review_*`` Prometheus series on an injected registry.
* ``templates/`` (Jinja2) and ``static/`` (one JS and one CSS file).

Imports go one way: this package may import :mod:`inspector` (the decision and label domain in
:mod:`inspector.labels`, settings, the results layout), :mod:`workers.errors` and
:mod:`workers.evidence`; nothing outside ``workers.review`` and ``workers.commands.review`` imports it.
"""

from __future__ import annotations

from workers.review.app import create_app
from workers.review.users import User, UserError, UserStore

__all__ = ["User", "UserError", "UserStore", "create_app"]
