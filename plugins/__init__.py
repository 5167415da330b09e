"""hookgate's built-in plugins, installed as ``hookgate.builtin_plugins``.

Each module is a pluggy plugin, registered exactly as a third-party package's would be: it imports
only the public API (``from hookgate import hookimpl, Preset, Verdict, load_preset``; the hooks are
in ``hookgate.hookspecs``). Their templates and defaults are in ``presets/``
(``hookgate.builtin_presets``)."""
