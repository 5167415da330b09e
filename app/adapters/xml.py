"""Safe XML → dict, for sources that post XML (WebEngage feedback and survey webhooks, seed 003).

``parse`` uses defusedxml with DTDs, entity declarations and external references all forbidden, so a
"billion laughs" or XXE body is refused (``ValidationError``) before anything is expanded or fetched.
``to_dict`` turns an element into plain data the way the same resource looks as JSON:

- attributes become ``"@name"`` keys (``<value class="email">`` → ``{"@class": "email"}``, as WebEngage's
  JSON spells it); namespaces are dropped from tag and attribute names;
- an element with only text becomes that string (``<id>x</id>`` → ``"x"``; empty → ``None``);
- a repeated child tag becomes a list, and so does a container whose children are its singular
  (``<fields><field/></fields>`` and ``<values><value/><value/></values>`` → lists);
- text beside child elements or attributes is kept under ``"#text"``.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from ..errors import ValidationError

__all__ = ["parse", "to_dict", "MAX_DEPTH"]

MAX_DEPTH = 64


def parse(body: bytes | str) -> Element:
    """Parse an XML body; anything unsafe or malformed, or in an encoding that cannot be read, is a
    ``ValidationError`` (422)."""
    try:
        return fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ValidationError(
            "the XML body is refused: DTDs, entity declarations and external references are not allowed",
            {"_body": [type(exc).__name__]},
        ) from None
    except LookupError as exc:  # the declaration names an encoding Python has not, or not for text
        raise ValidationError("the XML body declares an encoding hookgate cannot read",
                              {"_body": [str(exc)]}) from None
    except (ParseError, ValueError, TypeError) as exc:
        raise ValidationError("the body is not well-formed XML", {"_body": [str(exc)]}) from None


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _is_plural_of(plural: str, singular: str) -> bool:
    """``fields``/``field``, ``replies``/``reply``, ``addresses``/``address``."""
    if singular.endswith("y") and plural == singular[:-1] + "ies":
        return True
    return plural in (singular + "s", singular + "es")


def to_dict(element: Element, _depth: int = 0) -> Any:
    """The element's value: a string, ``None``, a list or a dict (see the module docstring)."""
    if _depth > MAX_DEPTH:
        raise ValidationError("the XML body is nested too deeply",
                              {"_body": [f"At most {MAX_DEPTH} levels."]})
    attributes = {"@" + _local(k): v for k, v in element.attrib.items()}
    children = list(element)
    text = (element.text or "").strip()
    if not children:
        return _leaf(attributes, text)
    tags = [_local(child.tag) for child in children]
    values = [to_dict(child, _depth + 1) for child in children]
    one_kind = not attributes and len(set(tags)) == 1
    if one_kind and (len(tags) > 1 or _is_plural_of(_local(element.tag), tags[0])):
        return values
    return _record(attributes, tags, values, text)


def _leaf(attributes: dict[str, Any], text: str) -> Any:
    """An element without children: its text (``None`` if empty), or its attributes and ``#text``."""
    if not attributes:
        return text or None
    if text:
        attributes["#text"] = text
    return attributes


def _record(attributes: dict[str, Any], tags: list[str], values: list[Any], text: str) -> dict[str, Any]:
    """An element with children of several tags (or with attributes): one key per tag, a list for a
    repeated tag, then the attributes and any ``#text``."""
    grouped: dict[str, list[Any]] = {}
    for tag, value in zip(tags, values, strict=True):
        grouped.setdefault(tag, []).append(value)
    result: dict[str, Any] = dict(attributes)
    for tag, found in grouped.items():
        result[tag] = found if len(found) > 1 else found[0]
    if text:
        result["#text"] = text
    return result
