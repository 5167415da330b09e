# gunicorn reads this file when started from this directory: `gunicorn wsgi:app`.
# The same defaults serve `hookgate web` and `hookgate up`; HOOKGATE_BIND, HOOKGATE_WEB_WORKERS,
# HOOKGATE_ACCESS_LOG and HOOKGATE_LOG_LEVEL change them, and gunicorn's own flags still win.
from gunicorn.config import KNOWN_SETTINGS

from hookgate.web import gunicorn_options

_known = {setting.name for setting in KNOWN_SETTINGS}
globals().update({key: value for key, value in gunicorn_options().items() if key in _known and value is not None})
