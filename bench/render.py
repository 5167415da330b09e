"""Rendering: renders per second of hookgate's ``render_delivery`` against a bare Jinja sandbox, side by side.

Templates: the default JSON body (``{{ event | tojson }}``), WebEngage's JSON default, a field mapping
of ten placeholders, and a template with a loop. The first three are bounded (template_limits.py) and
render in the calling process; the loop renders in a render process (render_guard.py), one round
trip each. The baseline is Jinja's ``ImmutableSandboxedEnvironment`` rendering the same source with
a plain ``json.dumps`` as ``tojson`` (no deadline, caps, escaping, format check or child process).
The event is hookgate's sample event (~520 bytes as JSON).

Rates are renders per second of the fastest batch of 200 (the one the machine's other load disturbed
least); a render process's round trip is wall time, as a worker waits for it. Run:
``/path/to/venv/bin/python bench/render.py [--seconds S]``; ``PYTHONPATH=<an exported tree>``
runs an older hookgate the same way (its first column is then that tree's).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from hookgate.presets import SAMPLE_EVENT
from hookgate.rendering import DEFAULT_TEMPLATES, render_delivery

MAPPING = "{" + ", ".join(f'"f{n}": {{{{ {path} | tojson }}}}' for n, path in enumerate(
    ["event.data.order_id", "event.data.value", "event.data.currency", "event.data.message", "event.user_id",
     "event.profile.email", "event.profile.first_name", "event.profile.city", "event.name", "event.time"])) + "}"
LOOP = "[{% for key in event.data %}{{ key | tojson }}{% if not loop.last %},{% endif %}{% endfor %}]"
TEMPLATES = {
    "default JSON ({{ event | tojson }})": DEFAULT_TEMPLATES[("canonical", "json")],
    "WebEngage JSON default": DEFAULT_TEMPLATES[("webengage", "json")],
    "10-field mapping": MAPPING,
    "a loop (render process)": LOOP,
}


def rate(render: Callable[[], Any], seconds: float, batch: int = 200) -> float:
    """Renders per second of the fastest batch of ``batch`` renders in ``seconds``: the best batch is
    the one the machine's other load disturbed least (2 CPUs here, shared)."""
    render()  # compiled, and a render process started, before timing
    best, started = float("inf"), time.perf_counter()
    while time.perf_counter() - started < seconds:
        begun = time.perf_counter()
        for _ in range(batch):
            render()
        best = min(best, time.perf_counter() - begun)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    seconds = parser.parse_args().seconds
    event = dict(SAMPLE_EVENT)
    bare = ImmutableSandboxedEnvironment()
    bare.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False, default=lambda _: None)
    print("renders per second (fastest batch of 200)")
    print(f"{'template':40} {'hookgate':>12} {'bare sandbox':>15} {'ratio':>7}")
    for name, source in TEMPLATES.items():
        destination = {"id": "dst_bench", "name": "bench", "url": "https://example.com/", "method": "POST",
                       "format": "json", "template": source}
        ours = rate(lambda d=destination: render_delivery(d, event, max_bytes=262144, timeout_s=1.0), seconds)
        template = bare.from_string(source)
        context = {"event": event, "data": event.get("data") or {}, "system": event.get("system") or {}}
        theirs = rate(lambda t=template, c=context: json.loads(t.render(c)), seconds)
        print(f"{name:40} {ours:12,.0f} {theirs:15,.0f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main()
