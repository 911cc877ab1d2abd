"""One rule per output for every string that comes from outside robust (a model or data name, a file path, a report
read back, an exception's text): what it must become before it enters that output.

- terminal: control characters (escape sequences, carriage returns, bells) are shown as ``\\xNN``, never executed,
  and rich's markup brackets are escaped;
- HTML: control characters shown, then ``html.escape`` with quotes;
- XML (JUnit): characters XML 1.0 cannot hold are shown as ``\\xNN`` (ElementTree escapes the rest);
- CSV: a cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
  return and is not a number) gets a leading ``'``, as OWASP advises;
- Markdown: control characters shown, line breaks and the characters that start markup (``| ` * _ [ ] < > #``)
  escaped, so a name stays one table cell of plain text (or a code span that a backtick cannot close);
- JSON and SARIF: ``json.dumps`` escapes everything; nothing to add.

``tests/test_hostile_strings.py`` pushes generated hostile strings through every field of every output.
"""

from __future__ import annotations

import html as _html
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # line breaks too: one-line contexts
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|#])")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _shown(match: re.Match) -> str:
    return f"\\x{ord(match.group(0)):02x}" if ord(match.group(0)) < 0x100 else f"\\u{ord(match.group(0)):04x}"


def visible(text: object, *, one_line: bool = True) -> str:
    """Control characters as visible escapes (line breaks too when ``one_line``)."""
    return (_CONTROL_ALL if one_line else _CONTROL).sub(_shown, str(text))


def terminal(text: object) -> str:
    """For rich: nothing executes (escape sequences shown) and nothing styles (markup escaped)."""
    from rich.markup import escape

    return escape(visible(text))


def html(text: object) -> str:
    return _html.escape(visible(text, one_line=False), quote=True)


def xml(text: object) -> str:
    """Text XML 1.0 can hold; ElementTree escapes ``<``, ``&`` and quotes itself."""
    return _NOT_XML.sub(_shown, str(text))


def csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: formula-like strings get a leading apostrophe. Numbers pass unchanged."""
    if not isinstance(value, str):
        return value
    value = visible(value)
    if value.startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def markdown(text: object) -> str:
    return _MARKDOWN.sub(r"\\\1", visible(text))


def code(text: object) -> str:
    """A Markdown code span that holds any name: double backticks, so a backtick inside cannot close it."""
    inner = visible(text).replace("``", "` `")
    return f"`` {inner} ``" if "`" in inner else f"`{inner}`"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
