"""An example hookgate plugin package: the README's walk-through, installed by the tests with pip.

It registers one preset (``example.notify``: JSON to an "Acme" notification API with an API key
header), one template filter (``example_shout``) and reads Acme's answers, which say
``{"accepted": false, "why": "..."}`` in a 200 when a message is refused, and ``{"busy": true}``
when Acme wants it again later.
"""

from hookgate import Param, Preset, Verdict, hookimpl

PRESET = Preset(
    name="example.notify",
    title="Acme notification",
    description="Sends the event's message to Acme's notification API.",
    base_url="https://api.acme.example",
    path="/v1/{{ params.workspace | urlencode }}/notify",
    headers={"X-Acme-Key": "{{ params.api_key }}"},
    template=('{"to": {{ event.user_id | tojson }}, '
              '"text": {{ (data.message or event.name) | example_shout | tojson }}}'),
    params=(
        Param("workspace", required=True, description="Your Acme workspace"),
        Param("api_key", required=True, secret=True, description="An Acme API key"),
    ),
    auth={"type": "header", "header": "X-Acme-Key", "param": "api_key"},
    example_params={"workspace": "demo"},
)


@hookimpl
def register_presets(register):
    register(PRESET)


@hookimpl
def register_template_filters():
    return {"example_shout": lambda text: str(text).upper() + "!"}


@hookimpl
def classify_response(preset, response, references):
    if preset.name != PRESET.name or response.status_code != 200:
        return None
    answer = response.json() or {}
    if answer.get("busy"):
        return Verdict("bounced", reason="acme: busy", retry_after_s=120)
    if answer.get("accepted") is False:
        return Verdict("error", reason=f"acme refused it: {answer.get('why')}")
    return None
