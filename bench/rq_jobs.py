"""The RQ-job-per-delivery baseline for ``deliver.py``: one RQ job per request, run by RQ's own worker.

``post_one`` is what such a design enqueues for each delivery. ``deliver.py`` starts the stock,
forking ``rq worker --burst`` with ``-c rq_jobs``, so this module (and ``requests``) is imported
once in the worker before it forks, rather than by every job's work horse: that favours RQ.
"""

from __future__ import annotations

import requests

QUEUE = "bench-rq-baseline"


def post_one(url: str, body: bytes) -> int:
    """POST one JSON body (a new connection each job: a forked work horse has no pool to reuse)."""
    response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=5)
    response.raise_for_status()
    return response.status_code
