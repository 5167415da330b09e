"""Meta: the Conversions API (``meta.conversions``), WhatsApp Cloud API text and template messages
(``meta.whatsapp_text``, ``meta.whatsapp_template``) and the Messenger Send API (``meta.messenger``).

Template filters (every template may use them):

- ``meta_user_data`` (``{{ event | meta_user_data }}``, or ``meta_user_data("US")`` to give phone
  numbers of profiles without a country that country's code): the Conversions API ``user_data`` of
  an event: its profile's email, phone, names, gender, birth date, city, state, zip and country,
  and its ``user_id`` as ``external_id``, normalised and SHA-256 hashed as Meta specifies; the IP
  address, user agent, ``fbc`` and ``fbp`` (from the profile or the data) unhashed.
- ``meta_hash(kind)`` (``{{ profile.email | meta_hash("em") }}``) and ``meta_normalize(kind)``: one
  value hashed, or only normalised. A value that is already a SHA-256 (64 hex digits) passes as is.
- ``meta_custom_data(currency)``, ``meta_action_source(default)``: the rest of a server event.
- ``meta_whatsapp_to(fixed)``, ``meta_psid(fixed)``, ``meta_message_text(fallback, limit)``: the
  recipient and text of a WhatsApp or Messenger message.

Every Meta API answers errors as ``{"error": {"message", "type", "code", "error_subcode",
"fbtrace_id"}}``. Codes 1, 2, 4, 17, 32 and 613 (and any error marked ``is_transient``) are
transient or throttling: retried, after the time Meta's usage headers give when they give one;
each API adds its own (WhatsApp 130429/131056 retried, 131047/131026 final; Messenger 551 final).
The reason recorded names the code and Meta's message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import time
import unicodedata
from collections.abc import Callable
from typing import Any

from jinja2 import Undefined

from hookgate import Verdict, hookimpl, load_preset

CONVERSIONS = "meta.conversions"
WHATSAPP_TEXT = "meta.whatsapp_text"
WHATSAPP_TEMPLATE = "meta.whatsapp_template"
MESSENGER = "meta.messenger"

# The Conversions API refuses an event older than 7 days, and with it the whole request. An event
# this close to the limit would be older by the time Meta reads it: a minute's margin.
MAX_EVENT_AGE_S = 7 * 86400 - 60
ACTION_SOURCES = ("website", "app", "email", "phone_call", "chat", "physical_store", "system_generated",
                  "business_messaging", "other")

# -- normalising and hashing customer information ---------------------------------------------------

HASHED_KINDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
UNHASHED_KINDS = ("client_ip_address", "client_user_agent", "fbc", "fbp")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# An e-mail (fullmatch): one @ between a local part and a domain with a dot that is neither its first nor
# its last character, no whitespace. Possessive quantifiers, so matching is one pass: the plain form
# [^@\s]+@[^@\s]+\.[^@\s]+ backtracks through every dot of the domain and took 20 s on a 58 KiB value.
_EMAIL = re.compile(r"[^@\s]++@[^@\s][^@\s.]*+\.[^@\s]++")
_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:$|[Tt\s])|(\d{4})(\d{2})(\d{2})$")
_US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca", "colorado": "co",
    "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc", "florida": "fl", "georgia": "ga",
    "hawaii": "hi", "idaho": "id", "illinois": "il", "indiana": "in", "iowa": "ia", "kansas": "ks",
    "kentucky": "ky", "louisiana": "la", "maine": "me", "maryland": "md", "massachusetts": "ma",
    "michigan": "mi", "minnesota": "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt",
    "nebraska": "ne", "nevada": "nv", "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm",
    "newyork": "ny", "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok",
    "oregon": "or", "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va", "washington": "wa",
    "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy", "puertorico": "pr",
}
_COUNTRY_NAMES = {"usa": "us", "unitedstates": "us", "unitedstatesofamerica": "us", "uk": "gb",
                  "unitedkingdom": "gb", "greatbritain": "gb"}


# Country calling codes (ISO 3166-1 alpha-2 → ITU E.164 code): a phone number written without its
# country code gets the one of the customer's country.
_CALLING_CODES = dict(pair.split(":") for pair in [
    "af:93", "al:355", "dz:213", "as:1", "ad:376", "ao:244", "ai:1", "ag:1", "ar:54", "am:374", "aw:297", "au:61",
    "at:43", "az:994", "bs:1", "bh:973", "bd:880", "bb:1", "by:375", "be:32", "bz:501", "bj:229", "bm:1", "bt:975",
    "bo:591", "ba:387", "bw:267", "br:55", "bn:673", "bg:359", "bf:226", "bi:257", "kh:855", "cm:237", "ca:1",
    "cv:238", "ky:1", "cf:236", "td:235", "cl:56", "cn:86", "co:57", "km:269", "cg:242", "cd:243", "ck:682", "cr:506",
    "ci:225", "hr:385", "cu:53", "cw:599", "cy:357", "cz:420", "dk:45", "dj:253", "dm:1", "do:1", "ec:593", "eg:20",
    "sv:503", "gq:240", "er:291", "ee:372", "sz:268", "et:251", "fo:298", "fj:679", "fi:358", "fr:33", "gf:594",
    "pf:689", "ga:241", "gm:220", "ge:995", "de:49", "gh:233", "gi:350", "gr:30", "gl:299", "gd:1", "gp:590", "gu:1",
    "gt:502", "gn:224", "gw:245", "gy:592", "ht:509", "hn:504", "hk:852", "hu:36", "is:354", "in:91", "id:62",
    "ir:98", "iq:964", "ie:353", "il:972", "it:39", "jm:1", "jp:81", "jo:962", "kz:7", "ke:254", "ki:686", "kp:850",
    "kr:82", "kw:965", "kg:996", "la:856", "lv:371", "lb:961", "ls:266", "lr:231", "ly:218", "li:423", "lt:370",
    "lu:352", "mo:853", "mg:261", "mw:265", "my:60", "mv:960", "ml:223", "mt:356", "mh:692", "mq:596", "mr:222",
    "mu:230", "yt:262", "mx:52", "fm:691", "md:373", "mc:377", "mn:976", "me:382", "ms:1", "ma:212", "mz:258",
    "mm:95", "na:264", "nr:674", "np:977", "nl:31", "nc:687", "nz:64", "ni:505", "ne:227", "ng:234", "mk:389", "mp:1",
    "no:47", "om:968", "pk:92", "pw:680", "ps:970", "pa:507", "pg:675", "py:595", "pe:51", "ph:63", "pl:48", "pt:351",
    "pr:1", "qa:974", "re:262", "ro:40", "ru:7", "rw:250", "kn:1", "lc:1", "vc:1", "ws:685", "sm:378", "st:239",
    "sa:966", "sn:221", "rs:381", "sc:248", "sl:232", "sg:65", "sx:1", "sk:421", "si:386", "sb:677", "so:252",
    "za:27", "ss:211", "es:34", "lk:94", "sd:249", "sr:597", "se:46", "ch:41", "sy:963", "tw:886", "tj:992", "tz:255",
    "th:66", "tl:670", "tg:228", "to:676", "tt:1", "tn:216", "tr:90", "tm:993", "tc:1", "tv:688", "ug:256", "ua:380",
    "ae:971", "gb:44", "us:1", "uy:598", "uz:998", "vu:678", "va:39", "ve:58", "vn:84", "vg:1", "vi:1", "ye:967",
    "zm:260", "zw:263", "xk:383", "im:44", "je:44", "gg:44", "bq:599", "mf:590", "bl:590", "pm:508", "wf:681",
    "nu:683", "tk:690", "fk:500", "sh:290", "ax:358", "sj:47", "cx:61", "cc:61", "nf:672", "io:246", "eh:212"
])
# Where the leading 0 of a national number is part of the number (Italy's landlines: +39 06 ...).
_ZERO_KEPT = frozenset({"it", "va", "sm"})


def _given(value: Any) -> Any:
    """A template's undefined value is no value."""
    return None if isinstance(value, Undefined) else value


def _text(value: Any) -> str | None:
    """A scalar as trimmed text (numbers as their digits); None for nothing, booleans and containers."""
    value = _given(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        value = str(int(value))
    if not isinstance(value, str):
        return None
    value = unicodedata.normalize("NFC", value).strip()
    return value or None


def _digits(value: str) -> str:
    """The decimal digits of ``value`` as ASCII (a phone typed with Arabic-Indic digits included)."""
    return "".join(str(unicodedata.decimal(ch)) for ch in value if ch.isdecimal())


def _letters(value: str) -> str:
    """Letters only (any script, with their accents): no digits, spaces, punctuation or symbols."""
    return "".join(ch for ch in value if ch.isalpha() or unicodedata.category(ch).startswith("M"))


def _name(value: str) -> str:
    """Lowercase, no punctuation or symbols; letters of any script kept; inner spaces as one space."""
    kept = "".join(ch if ch.isalnum() or unicodedata.category(ch).startswith("M") else
                   " " if ch.isspace() else "" for ch in value)
    return " ".join(kept.split())


def _phone(value: str, country: Any = None) -> str | None:
    """Digits only, with the country code, no leading zeros. A number written with ``+`` or ``00``
    has its code; one written without gets the calling code of ``country`` (its national trunk 0
    dropped), when a country is known; otherwise its digits are taken as they are."""
    value = value.strip()
    if value.startswith("+"):
        value = value.replace("(0)", "")  # +44 (0)20 ...: the (0) is not dialled from abroad
    digits = _digits(value)
    place = _country(str(_text(country) or ""))
    code = _CALLING_CODES.get(place or "")
    if value.startswith("+") or digits.startswith("00") or code is None:
        return digits.lstrip("0") or None
    if digits.startswith("0"):
        national = digits if place in _ZERO_KEPT else digits.lstrip("0")
        return code + national if national.strip("0") else None
    if not digits:
        return None
    return digits if digits.startswith(code) else code + digits


def _birthdate(value: str) -> str | None:
    """YYYYMMDD from 1997-02-16, 1997/2/16, 19970216 or an ISO date-time; None if not a real date."""
    match = _DATE.match(value)
    if not match:
        return None
    try:
        return dt.date(*(int(part) for part in match.groups() if part is not None)).strftime("%Y%m%d")
    except ValueError:
        return None


def _country(value: str) -> str | None:
    code = _letters(value.lower())
    code = _COUNTRY_NAMES.get(code, code)
    return code if len(code) == 2 and code.isascii() else None


def meta_normalize(value: Any, kind: str, country: Any = None) -> str | None:
    """One customer-information value normalised as Meta specifies for ``kind`` (None if it has
    nothing usable). ``country`` (the customer's, ISO code or name) gives a phone number written
    without its country code that country's code, and tells a zip code it is a US one (first 5 digits)."""
    text = _text(value)
    if text is None:
        return None
    if kind in UNHASHED_KINDS:
        return text
    if kind not in HASHED_KINDS:
        raise ValueError(f"meta: no customer information parameter {kind!r}")
    normalise = _NORMALISERS.get(kind)
    text = text.lower()
    return normalise(text, country) if normalise else text  # external_id: trimmed and lowercased, as Meta's SDKs do


def _state(text: str, country: Any) -> str | None:
    state = _letters(text)
    return _US_STATES.get(state, state) or None


def _zip(text: str, country: Any) -> str | None:
    """No spaces or dashes; a US zip code (``country`` US, or none given and ZIP+4) as its first 5 digits."""
    zip_code = re.sub(r"[\s\-]", "", text)
    place = _country(str(_text(country) or ""))
    if place in (None, "us") and re.fullmatch(r"[0-9]{9}", zip_code):
        return zip_code[:5]  # ZIP+4
    if place == "us" and re.match(r"[0-9]{5}", zip_code):
        return zip_code[:5]
    return zip_code or None


# kind → (lowercased text, the customer's country) → the normalised value, or None if it has nothing usable
_NORMALISERS: dict[str, Callable[[str, Any], str | None]] = {
    "em": lambda text, country: text if _EMAIL.fullmatch(text) else None,
    "ph": _phone,
    "fn": lambda text, country: _name(text) or None,
    "ln": lambda text, country: _name(text) or None,
    "ge": lambda text, country: {"f": "f", "female": "f", "m": "m", "male": "m"}.get(_letters(text)),
    "db": lambda text, country: _birthdate(text),
    "ct": lambda text, country: _letters(text) or None,
    "st": _state,
    "zp": _zip,
    "country": lambda text, country: _country(text),
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def meta_hash(value: Any, kind: str, country: Any = None) -> Any:
    """``value`` normalised for ``kind`` and SHA-256 hashed (lowercase hex), or None if it has
    nothing usable. A list gives a list. A value that already is a SHA-256 passes unhashed; the
    kinds Meta wants in clear (client_ip_address, client_user_agent, fbc, fbp) are never hashed."""
    value = _given(value)
    if isinstance(value, (list, tuple)):
        hashed = [meta_hash(item, kind, country) for item in value]
        return list(dict.fromkeys(h for h in hashed if h)) or None
    if kind in UNHASHED_KINDS:
        return _text(value)
    text = _text(value)
    if text is not None and _SHA256.fullmatch(text.lower()):
        return text.lower()
    normalized = meta_normalize(text, kind, country)
    return _sha256(normalized) if normalized else None


# Where each user_data parameter is found in a hookgate event: profile fields first, then data
# fields for what a web request carries (IP address, user agent, Meta's cookies).
_PROFILE_FIELDS = {
    "em": ("email", "em"),
    "ph": ("phone", "phone_number", "mobile", "ph"),
    "fn": ("first_name", "firstname", "fn"),
    "ln": ("last_name", "lastname", "ln"),
    "ge": ("gender", "ge"),
    "db": ("birthdate", "date_of_birth", "birthday", "dob", "db"),
    "ct": ("city", "ct"),
    "st": ("state", "st"),
    "zp": ("zip", "zip_code", "postal_code", "zp"),
    "country": ("country", "country_code"),
}
_CLEAR_FIELDS = {
    "client_ip_address": ("client_ip_address", "ip", "ip_address"),
    "client_user_agent": ("client_user_agent", "user_agent"),
    "fbc": ("fbc",),
    "fbp": ("fbp",),
}


def _first(mapping: Any, names: tuple[str, ...]) -> Any:
    if not isinstance(mapping, dict):
        return None
    return next((mapping[n] for n in names if mapping.get(n) not in (None, "", [])), None)


def meta_user_data(event: Any, phone_country: Any = None) -> dict[str, Any]:
    """The Conversions API ``user_data`` of a hookgate event (see the module's docstring).
    ``phone_country`` stands for the profile's country when it has none, for phone numbers
    written without their country code (it is not sent as the customer's country)."""
    event = _given(event)
    if not isinstance(event, dict):
        return {}
    profile, data = event.get("profile") or {}, event.get("data") or {}
    country = _first(profile, _PROFILE_FIELDS["country"])
    user_data: dict[str, Any] = {}
    for kind, names in _PROFILE_FIELDS.items():
        place = (country or _given(phone_country)) if kind == "ph" else country
        hashed = meta_hash(_first(profile, names), kind, place)
        if hashed:
            user_data[kind] = hashed
    external_id = meta_hash(event.get("user_id"), "external_id")
    if external_id:
        user_data["external_id"] = external_id
    for kind, names in _CLEAR_FIELDS.items():
        value = _text(_first(profile, names) or _first(data, names))
        if value:
            user_data[kind] = value
    return user_data


_CUSTOM_FIELDS = ("contents", "content_ids", "content_type", "content_name", "content_category", "order_id",
                  "num_items", "predicted_ltv", "search_string", "delivery_category")


def _number(value: Any) -> float | int | None:
    """A finite number, from a number or its text (``"42.50"``); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(value if isinstance(value, float) else str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def meta_custom_data(event: Any, currency: Any = None) -> dict[str, Any]:
    """The Conversions API ``custom_data`` from the event's data: ``value`` with its currency (the
    event's, else ``currency``), ``contents``, ``order_id`` and Meta's other standard fields."""
    event = _given(event)
    data = (event.get("data") or {}) if isinstance(event, dict) else {}
    custom: dict[str, Any] = {}
    value = _number(data.get("value")) if data.get("value") not in (None, "") else None
    if value is not None:
        custom["value"] = value
    chosen = _text(data.get("currency")) or (_text(currency) if value is not None else None)
    if chosen:
        custom["currency"] = chosen
    for name in _CUSTOM_FIELDS:
        if data.get(name) not in (None, "", []):
            custom[name] = data[name]
    return custom


def meta_action_source(event: Any, default: Any = None) -> str:
    """The event's own ``data.action_source`` when it is one of Meta's, else ``default``."""
    event = _given(event)
    own = ((event.get("data") or {}) if isinstance(event, dict) else {}).get("action_source")
    if own in ACTION_SOURCES:
        return own
    default = _given(default)
    return default if default in ACTION_SOURCES else "system_generated"


# -- WhatsApp and Messenger ------------------------------------------------------------------------

def meta_whatsapp_to(event: Any, fixed: Any = None) -> str | None:
    """The WhatsApp recipient: ``fixed`` (the to param) if given, else the event's
    profile.whatsapp, profile.phone or data.phone; digits only with the country code (a number
    written without one gets the profile's country's), without leading zeros."""
    event = _given(event)
    profile = (event.get("profile") or {}) if isinstance(event, dict) else {}
    data = (event.get("data") or {}) if isinstance(event, dict) else {}
    country = _first(profile, _PROFILE_FIELDS["country"])
    for candidate, place in ((fixed, None), (profile.get("whatsapp"), country), (profile.get("phone"), country),
                             (data.get("phone"), country)):
        text = _text(candidate)
        number = _phone(text, place) if text else None
        if number:
            return number
    return None


def meta_psid(event: Any, fixed: Any = None) -> str | None:
    """The Messenger recipient: ``fixed`` (the psid param) if given, else profile.psid or data.psid."""
    event = _given(event)
    profile = (event.get("profile") or {}) if isinstance(event, dict) else {}
    data = (event.get("data") or {}) if isinstance(event, dict) else {}
    return next((t for t in (_text(fixed), _text(profile.get("psid")), _text(data.get("psid"))) if t), None)


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` UTF-16 code units (as Meta counts), ending in "…" when cut."""
    if len(text.encode("utf-16-le")) // 2 <= limit:
        return text
    units, kept = 0, []
    for ch in text:
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit - 1:
            break
        kept.append(ch)
    return "".join(kept) + "…"


def meta_message_text(event: Any, fallback: Any = None, limit: Any = None) -> str | None:
    """The message text: the event's data.message, else ``fallback`` (the text param), within ``limit``."""
    event = _given(event)
    data = (event.get("data") or {}) if isinstance(event, dict) else {}
    message = data.get("message")
    text = message.strip() if isinstance(message, str) and message.strip() else _text(fallback)
    if text is None:
        return None
    limit = _given(limit)
    return _cut(text, int(limit)) if limit else text


# -- screening: what Meta would refuse is skipped with a reason ------------------------------------

def _event_time(event: dict[str, Any]) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(str(event.get("time")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def screen_conversions(event: dict[str, Any], params: dict[str, Any]) -> str | None:
    moment = _event_time(event)
    if moment is None:
        return "meta: the event's time is not readable; the Conversions API needs event_time"
    age_s = time.time() - moment.timestamp()
    if age_s > MAX_EVENT_AGE_S:
        return (f"meta: the event is {age_s / 86400:.1f} days old; the Conversions API refuses events "
                f"older than 7 days (one would fail the whole request)")
    user_data = meta_user_data(event, params.get("phone_country"))
    if not user_data:
        return ("meta: no customer information to match the event (profile email, phone, name and address, "
                "user_id, IP address and user agent, fbc or fbp)")
    if meta_action_source(event, params.get("action_source")) == "website":
        missing = [name for name, present in (
            ("client_user_agent", "client_user_agent" in user_data),
            ("event_source_url", (event.get("data") or {}).get("event_source_url") or params.get("event_source_url")),
        ) if not present]
        if missing:
            return (f"meta: a website event needs {' and '.join(missing)} (data.user_agent, "
                    f"data.event_source_url or the event_source_url param); one without would fail the whole request")
    return None


def screen_whatsapp_text(event: dict[str, Any], params: dict[str, Any]) -> str | None:
    if not meta_whatsapp_to(event, params.get("to")):
        return "no recipient phone (profile.whatsapp, profile.phone, data.phone or the to param)"
    if not meta_message_text(event, params.get("text")):
        return "no message text (data.message or the text param)"
    return None


def screen_whatsapp_template(event: dict[str, Any], params: dict[str, Any]) -> str | None:
    if not meta_whatsapp_to(event, params.get("to")):
        return "no recipient phone (profile.whatsapp, profile.phone, data.phone or the to param)"
    return None


def screen_messenger(event: dict[str, Any], params: dict[str, Any]) -> str | None:
    if params.get("messaging_type") == "MESSAGE_TAG" and not params.get("tag"):
        return "messaging_type MESSAGE_TAG needs the tag param"
    if not meta_psid(event, params.get("psid")):
        return "no recipient PSID (profile.psid, data.psid or the psid param)"
    if not meta_message_text(event, params.get("text")):
        return "no message text (data.message or the text param)"
    return None


# -- classifying Graph API answers -----------------------------------------------------------------

GRAPH_TRANSIENT = frozenset({1, 2, 4, 17, 32, 613})
RETRIED = {
    CONVERSIONS: GRAPH_TRANSIENT,
    # 130429 throughput, 131056 pair rate limit, 80007 account rate limit, 131016 service
    # unavailable, 133004 server temporarily unavailable
    WHATSAPP_TEXT: GRAPH_TRANSIENT | {130429, 131056, 80007, 131016, 133004},
    WHATSAPP_TEMPLATE: GRAPH_TRANSIENT | {130429, 131056, 80007, 131016, 133004},
    MESSENGER: GRAPH_TRANSIENT | {1200},  # 1200: temporary send message failure
}
FINAL = {
    CONVERSIONS: frozenset({100, 190}),
    # 131047 outside the 24-hour window (a template is needed), 131026 undeliverable
    WHATSAPP_TEXT: frozenset({100, 190, 131047, 131026}),
    WHATSAPP_TEMPLATE: frozenset({100, 190, 131047, 131026}),
    MESSENGER: frozenset({100, 190, 551}),  # 551: this person isn't available right now
}
MAX_WAIT_S = 3600.0


def _code(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _usage_wait_s(headers: dict[str, str]) -> float | None:
    """The wait Meta's ``X-Business-Use-Case-Usage`` header asks for when a rate limit is hit
    (``estimated_time_to_regain_access``, in minutes); None when it says nothing."""
    raw = next((v for k, v in headers.items() if k.lower() == "x-business-use-case-usage"), None)
    try:
        usage = json.loads(raw) if raw else None
    except ValueError:
        return None
    minutes = [_code(entry.get("estimated_time_to_regain_access")) or 0
               for group in (usage.values() if isinstance(usage, dict) else ())
               for entry in (group if isinstance(group, list) else [group]) if isinstance(entry, dict)]
    return min(max(minutes) * 60.0, MAX_WAIT_S) if minutes and max(minutes) > 0 else None


def _graph_reason(error: dict[str, Any]) -> str:
    """A Graph API error in one line (at most 1,000 characters): code/subcode, message, details, and
    the trace id Meta's support asks for."""
    subcode = _code(error.get("error_subcode"))
    detail = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
    reason = f"meta: code {error.get('code')}" + (f"/{subcode}" if subcode else "") + \
        f": {error.get('message') or 'no message'}" + (f" ({detail})" if detail else "") + \
        (f" [{error.get('type')}, fbtrace_id {error.get('fbtrace_id')}]" if error.get("fbtrace_id") else "")
    return reason[:1000]


def graph_verdict(name: str, response: Any) -> Verdict | None:
    """A Graph API error body read per ``name``'s codes; None when the body is no Graph error."""
    if response.status_code is None:
        return None
    answer = response.json()
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return None
    code = _code(error.get("code"))
    status = response.status_code
    reason = _graph_reason(error)
    if code in RETRIED[name] or error.get("is_transient") is True:
        return Verdict("bounced", reason, retry_after_s=_usage_wait_s(response.headers or {}))
    if code in FINAL[name]:
        return Verdict("error", reason)
    if status >= 500 or status in (408, 409, 425, 429):
        return Verdict("bounced", reason)
    return Verdict("error", reason)


# -- hooks -----------------------------------------------------------------------------------------

@hookimpl
def register_presets(register):
    register(load_preset(CONVERSIONS, screen=screen_conversions))
    register(load_preset(WHATSAPP_TEXT, screen=screen_whatsapp_text))
    register(load_preset(WHATSAPP_TEMPLATE, screen=screen_whatsapp_template))
    register(load_preset(MESSENGER, screen=screen_messenger))


@hookimpl
def register_template_filters():
    return {
        "meta_hash": meta_hash,
        "meta_normalize": meta_normalize,
        "meta_user_data": meta_user_data,
        "meta_custom_data": meta_custom_data,
        "meta_action_source": meta_action_source,
        "meta_whatsapp_to": meta_whatsapp_to,
        "meta_psid": meta_psid,
        "meta_message_text": meta_message_text,
    }


@hookimpl
def classify_response(preset, response, references):
    if preset.name not in RETRIED:
        return None
    return graph_verdict(preset.name, response)
