"""The WSGI entry point: ``gunicorn hookgate.wsgi:app`` from anywhere (settings come from HOOKGATE_* variables)."""

from .factory import create_app

app = create_app()
