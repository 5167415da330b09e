"""The WSGI entry point: ``gunicorn wsgi:app`` (settings come from HOOKGATE_* variables)."""

from app import create_app

app = create_app()
