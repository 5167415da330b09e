"""Export and import: an instance's configuration as one JSON document, without a single secret.

``export_document`` writes::

    {"hookgate_export": 1, "exported_at": iso, "policies": [...], "auth_profiles": [...],
     "presets": [...user presets...], "destinations": [...]}

- **No secrets, no ciphertext.** An auth profile loses every secret field (password, token,
  client_secret, private_key, secret header values, query values, signing secrets) and says which it
  needs in ``secrets_needed`` (secret headers keep their name, query parameters their name with a
  null value). A preset destination loses ``preset.secrets``; ``preset.secret_params`` names them.
  A user preset's secret parameters lose their default. Plugins' presets are not exported (the target
  has its plugins).
- **Ids are kept**, so ``policy_id``, ``auth_profile_id`` and ``fail_destination_id`` still resolve.
  Runtime state (statistics, ``disabled_at``, cached tokens, pending deliveries) does not move;
  ``enabled`` does.

``import_document`` is **all or nothing**: the whole document is checked first (shape, version,
templates, references, an auth profile's prefix covering its destinations' URLs); any problem is a
422 naming each item (``details[section][id]``) and nothing is written. Then everything is written in
one Redis transaction (policies, auth profiles, user presets, destinations). A reference may point at
an item of the document or one the target already has.

- **Existing ids**: ``mode="overwrite"`` (the default) replaces them; ``mode="skip"`` leaves them as
  they are (counted under ``skipped``). When an overwritten auth profile (or a preset destination's
  preset) is the same as the target's apart from its name and timestamps, the target's stored
  secrets are kept: importing the same document again changes nothing and undoes no re-entered secret.
- **Secrets to re-enter**: an auth profile without its secrets is stored with ``needs_secrets`` and is
  never applied (``auth_profiles.reveal`` refuses it; a delivery through it fails, not retried). A
  destination that uses such a profile, or a preset destination missing secret parameters
  (``preset.needs_secrets``), is stored disabled with ``disabled_reason: "needs_secrets"`` — so is any
  destination the target already had that uses a profile the import left without secrets. Re-enter
  with ``PATCH /v1/auth-profiles/<id>`` (the fields; a signing ``secret`` too) and
  ``PATCH /v1/destinations/<id> {"params": {...}}``, then ``POST /v1/destinations/<id>/enable``
  (a 409 until nothing is missing).

The answer: ``{"mode", "imported": {section: n}, "replaced": {section: n}, "skipped": {section: n},
"needs_secrets": [{"kind": "auth_profile"|"destination", "id", "name", "fields": [...]}]}`` (a
destination waiting for its profile also names ``auth_profile_id``).

The package by what it does: ``export`` writes the document; ``plan`` checks one (every item through
the schemas and rules the API uses, every problem collected) into what would be written; ``apply``
writes that in one transaction and answers the report.
"""

from __future__ import annotations

from .apply import import_document
from .export import VERSION, export_document
from .plan import MODES

__all__ = ["VERSION", "MODES", "export_document", "import_document"]
