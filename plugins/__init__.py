"""hookgate's built-in plugins: each module is a pluggy plugin, registered exactly as a third-party
package's would be (see ``app/hookspecs.py``); their templates and defaults are in ``presets/``."""
