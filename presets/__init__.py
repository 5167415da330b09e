"""The data of hookgate's built-in presets, installed as ``hookgate.builtin_presets``.

One folder per preset, named after it, holding ``preset.json`` (request shape, parameters, defaults)
and its templates (``body.j2``, or ``item.j2`` and ``root.j2`` for a batch). Loaded by the plugins in
``plugins/`` with ``hookgate.load_preset``."""
