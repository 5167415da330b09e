"""The baseline for ``bench/ingest.py``: a bare Flask endpoint with hookgate's ingest URL, served by the
same gunicorn settings (``python -m gunicorn -c gunicorn.conf.py bench._ingest_bare:app``). It parses
the JSON body and answers 202, and does nothing else: no Redis, no auth, no validation."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

app = Flask(__name__)


@app.post("/v1/sources/<source_id>/events")
def events(source_id: str) -> tuple[dict[str, Any], int]:
    body = request.get_json()
    return {"accepted": len(body) if isinstance(body, list) else 1}, 202
