"""``gunicorn wsgi:app`` from the project directory (it reads ``gunicorn.conf.py`` beside this file);
``gunicorn hookgate.wsgi:app`` works from anywhere. Settings come from HOOKGATE_* variables."""

from hookgate.wsgi import app

__all__ = ["app"]
