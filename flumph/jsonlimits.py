"""JSON from outsiders, parsed only within limits of size and nesting depth.

Python's ``json`` module recurses once per nesting level: about 3 KB of ``[[[[...`` passes any
size limit worth having and raises ``RecursionError`` deep inside the parser, which escapes every
``except ValueError`` around it (the viewer WebSocket dropped without a close frame, the API
answered 500, an MQTT command got no ack). So the depth is measured first, by a scan that does not
recurse, and the document is refused with a message naming the limit before ``json.loads`` sees
it. Every parser of outside JSON (MQTT payloads, WebSocket messages, HTTP bodies) goes through
:func:`loads`.

The limits are generous for what Flumph sends (its deepest document, ``reported``, nests 3
levels) and small enough that nothing downstream (pydantic, ``json.dumps`` of an echo) can
recurse into trouble either.
"""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_BYTES = 64 * 1024

# A JSON string (with its escapes) or one bracket. Strings are matched whole so that brackets
# inside them do not count; what is left between matches (numbers, literals, commas) is skipped.
# An unterminated string matches to the end of the text: a string match can never fail and be
# retried from the next quote, so the scan stays linear on any input (a plain "..." pattern
# takes quadratic time on '"\"\"\"...').
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


class JsonLimitError(ValueError):
    """A document refused before parsing or while parsing; the message names the problem."""


def nesting_depth(text: str, limit: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``text`` (0 for a scalar).

    Not a validator: malformed text gets a best-effort count (an unterminated string's brackets
    may count), and the parser refuses it afterwards. With ``limit`` it stops counting as soon as
    the depth exceeds it and returns ``limit + 1``.
    """
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
        elif c in "]}":
            depth -= 1
    return deepest


def loads(
    data: bytes | str,
    what: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """``json.loads`` for outside input: size and depth checked first; JsonLimitError names
    ``what`` and the problem (too large, too deep, not UTF-8, not JSON and where)."""
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise JsonLimitError(f"{what}: {size} bytes is more than the limit of {max_bytes}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonLimitError(f"{what}: not UTF-8 text") from None
    else:
        text = data
    depth = nesting_depth(text, max_depth)
    if depth > max_depth:
        raise JsonLimitError(
            f"{what}: JSON nested more than {max_depth} levels deep (arrays/objects)"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise JsonLimitError(f"{what}: not JSON ({e.msg} at position {e.pos})") from None
    except RecursionError:  # cannot happen below the depth limit; defence in depth
        raise JsonLimitError(f"{what}: JSON nested too deeply") from None


def loads_object(
    data: bytes | str,
    what: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, Any]:
    """:func:`loads` of a document that must be a JSON object."""
    doc = loads(data, what, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(doc, dict):
        raise JsonLimitError(f"{what}: expected a JSON object, got {_json_type(doc)}")
    return doc


def _json_type(doc: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(doc, kind):
            return name
    return "a number"
