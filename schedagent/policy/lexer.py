"""A C preprocessing-token lexer for the static gate.

It does what clang's translation phases 1-3 do to a source before any directive
is seen: backslash-newline splices are joined, comments become whitespace
(a block comment may span lines without ending a directive), string and
character literals are single tokens, and the digraphs ``%:``, ``%:%:``,
``<:``, ``:>``, ``<%`` and ``%>`` are the punctuators they spell. So
``# /**/ include``, ``%:include`` and a ``#\\`` spliced line all reach the gate
as the directive they are. Every token keeps the physical line it starts on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_DIGRAPHS = {"%:%:": "##", "%:": "#", "<:": "[", ":>": "]", "<%": "{", "%>": "}"}
_PUNCT = sorted(
    [
        "...",
        "<<=",
        ">>=",
        "->",
        "++",
        "--",
        "<<",
        ">>",
        "<=",
        ">=",
        "==",
        "!=",
        "&&",
        "||",
        "*=",
        "/=",
        "%=",
        "+=",
        "-=",
        "&=",
        "^=",
        "|=",
        "##",
        *_DIGRAPHS,
    ],
    key=len,
    reverse=True,
)
_STRING_PREFIXES = ("u8", "L", "u", "U")


@dataclass(frozen=True, slots=True)
class Token:
    """One preprocessing token: kind, spelling (digraphs normalised) and physical line."""

    kind: str  # ident, number, string, char, header, punct, newline
    text: str
    line: int


def _splice(text: str) -> tuple[str, list[int]]:
    """Join backslash-newline splices; return the text and each character's line."""
    chars: list[str] = []
    lines: list[int] = []
    line, i, n = 1, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and text.startswith("\n", i + 1):
            i, line = i + 2, line + 1
            continue
        if c == "\\" and text.startswith("\r\n", i + 1):
            i, line = i + 3, line + 1
            continue
        chars.append(c)
        lines.append(line)
        if c == "\n":
            line += 1
        i += 1
    return "".join(chars), lines


def tokenize(text: str) -> list[Token]:
    """Preprocessing tokens of ``text``; ValueError(message, line) on a lexical error."""
    src, lines = _splice(text)
    n = len(src)
    out: list[Token] = []
    i = 0
    after_include = False

    def line_of(pos: int) -> int:
        return lines[min(pos, n - 1)] if n else 1

    while i < n:
        c = src[i]
        if c == "\n":
            out.append(Token("newline", "\n", line_of(i)))
            i += 1
            after_include = False
            continue
        if c in " \t\f\v\r":
            i += 1
            continue
        if src.startswith("//", i):
            end = src.find("\n", i)
            i = n if end < 0 else end
            continue
        if src.startswith("/*", i):
            end = src.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated /* comment", line_of(i))
            i = end + 2
            continue
        start = i
        if after_include and c in '<"':
            close = ">" if c == "<" else '"'
            end = src.find(close, i + 1)
            newline = src.find("\n", i + 1)
            if end < 0 or (0 <= newline < end):
                raise ValueError("unterminated header name", line_of(i))
            out.append(Token("header" if c == "<" else "string", src[i : end + 1], line_of(i)))
            i = end + 1
            after_include = False
            continue
        if c.isalpha() or c in "_$" or ord(c) > 127:
            j = i + 1
            while j < n and (src[j].isalnum() or src[j] in "_$" or ord(src[j]) > 127):
                j += 1
            word = src[i:j]
            if j < n and src[j] in "\"'" and word in _STRING_PREFIXES:
                i = j  # an encoding prefix: the literal follows
                tok = _literal(src, i, line_of)
                out.append(Token(tok[0], word + tok[1], line_of(start)))
                i += len(tok[1])
                continue
            if (
                j < n
                and src[j] == '"'
                and word.endswith("R")
                and word[:-1] in ("", "L", "u", "U", "u8")
            ):
                raise ValueError("raw string literals are not allowed", line_of(i))
            # a header name is lexed as one token only right after "# include"
            after_include = (
                word == "include"
                and bool(out)
                and out[-1].text == "#"
                and (len(out) == 1 or out[-2].kind == "newline")
            )
            out.append(Token("ident", word, line_of(i)))
            i = j
            continue
        if c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            j = i + 1
            while j < n:
                if src[j] in "eEpP" and j + 1 < n and src[j + 1] in "+-":
                    j += 2
                elif src[j].isalnum() or src[j] in "._'":
                    j += 1
                else:
                    break
            out.append(Token("number", src[i:j], line_of(i)))
            i = j
            continue
        if c in "\"'":
            kind, spelling = _literal(src, i, line_of)
            out.append(Token(kind, spelling, line_of(i)))
            i += len(spelling)
            continue
        for punct in _PUNCT:
            if src.startswith(punct, i):
                out.append(Token("punct", _DIGRAPHS.get(punct, punct), line_of(i)))
                i += len(punct)
                break
        else:
            out.append(Token("punct", c, line_of(i)))
            i += 1
    return out


def _literal(src: str, i: int, line_of: Callable[[int], int]) -> tuple[str, str]:
    """(kind, spelling) of the string or character literal starting at ``src[i]``."""
    quote = src[i]
    j = i + 1
    while j < len(src) and src[j] != quote:
        if src[j] == "\n":
            break
        j += 2 if src[j] == "\\" else 1
    if j >= len(src) or src[j] != quote:
        kind = "string" if quote == '"' else "character"
        raise ValueError(f"unterminated {kind} literal", line_of(i))
    return ("string" if quote == '"' else "char"), src[i : j + 1]
