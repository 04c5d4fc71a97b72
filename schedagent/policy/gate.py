"""The static gate: checks a scheduler's source before anything compiles it.

It is the first and cheapest verification gate, and the one that keeps
generated code from reaching for capabilities a CPU scheduler never needs.
Every rejection names the offending line. A plain hand-written sched_ext
scheduler that includes only ``vmlinux.h``, libbpf's ``<bpf/...>`` headers and
the project's ``bpf/`` headers passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schedagent.errors import GateRejection
from schedagent.policy import allowlist
from schedagent.policy.lexer import Token, tokenize

MAX_SOURCE_BYTES = 64 * 1024
MAX_SOURCE_LINES = 1500

#: Names a source may mention (helpers, kfuncs, header macros): one list, in allowlist.py.
ALLOWED_NAMES = allowlist.SOURCE_NAMES

#: Program sections a scheduler object may contain.
_ALLOWED_SECTIONS = re.compile(
    r"^(\.struct_ops\.link|struct_ops(\.s)?/\w+|\.(data|bss|rodata)(\.\w+)?|license|\.maps)$"
)
_ALLOWED_INCLUDE = re.compile(r"^(vmlinux\.h|bpf/[\w.-]+\.h|schedagent/[\w.-]+\.h)$")
_OPS_DEF = re.compile(r"\b(?:SCX_OPS_DEFINE\s*\(\s*(\w+)|struct\s+sched_ext_ops\s+(\w+))")
_OPS_NAME = re.compile(r'\.name\s*=\s*"([^"]*)"')
#: Directives a scheduler needs; #include is checked on its own.
_PLAIN_DIRECTIVES = frozenset(
    "define undef if ifdef ifndef elif elifdef elifndef else endif".split()
)
_ASM = frozenset({"asm", "__asm", "__asm__"})
_PRAGMA = frozenset({"_Pragma", "__pragma"})
_FILE_PROBES = frozenset({"__has_include", "__has_include_next", "__has_embed"})
_RESERVED = re.compile(r"^(scx_bpf|bpf)_\w+$")
_TAG_KEYWORDS = frozenset({"struct", "union", "enum"})


@dataclass(frozen=True, slots=True)
class GateReport:
    """What the gate learnt from a source it accepted."""

    ops_name: str
    calls: frozenset[str]
    lines: int
    size_bytes: int


def strip_comments_and_strings(text: str) -> str:
    """Blank out comments and string/char contents, keeping line numbers intact."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_source(text: str, source: str = "<source>") -> GateReport:
    """Run the static gate; return what it found or raise :class:`GateRejection`.

    The gate lexes preprocessing tokens (comments, strings, line splices and
    digraphs handled as clang does) and checks every directive and identifier. It
    is a fast filter with line-numbered messages; the object check after clang is
    the security boundary.
    """
    size = len(text.encode())
    if size > MAX_SOURCE_BYTES:
        raise GateRejection(
            source,
            0,
            "size limit",
            f"{size} bytes, the limit is {MAX_SOURCE_BYTES}; a scheduler this "
            "large is probably two policies",
        )
    raw_lines = text.splitlines()
    if len(raw_lines) > MAX_SOURCE_LINES:
        raise GateRejection(
            source,
            MAX_SOURCE_LINES + 1,
            "size limit",
            f"{len(raw_lines)} lines, the limit is {MAX_SOURCE_LINES}",
        )
    if "\0" in text:
        raise GateRejection(source, 0, "encoding", "the source contains NUL bytes")
    try:
        lines = _logical_lines(tokenize(text))
    except ValueError as err:
        line = int(err.args[1]) if len(err.args) > 1 else 0
        raise GateRejection(source, line, "lexical error", str(err.args[0])) from err
    calls: set[str] = set()
    for toks in lines:
        if toks[0].text == "#":
            _check_directive(toks, source)
            # #if lines and #define bodies are checked like code (a name, a probe, a pragma)
            body = toks[2:] if len(toks) > 2 and toks[1].text != "include" else []
        else:
            body = toks
        calls |= _check_tokens(body, source)
    ops_name = _required_ops(text, strip_comments_and_strings(text), source)
    return GateReport(ops_name, frozenset(calls), len(raw_lines), size)


def _logical_lines(tokens: list[Token]) -> list[list[Token]]:
    """Tokens grouped by logical line (line splices and block comments already joined)."""
    lines: list[list[Token]] = []
    current: list[Token] = []
    for tok in tokens:
        if tok.kind == "newline":
            if current:
                lines.append(current)
            current = []
        else:
            current.append(tok)
    if current:
        lines.append(current)
    return lines


def _check_directive(toks: list[Token], source: str) -> None:
    if len(toks) == 1:
        return  # the null directive
    name = toks[1]
    if name.text == "include":
        _check_include(toks, source)
        return
    if name.kind != "ident" or name.text not in _PLAIN_DIRECTIVES:
        shown = " ".join(t.text for t in toks[:3])
        raise GateRejection(
            source,
            toks[0].line,
            "directive not allowed",
            f"{shown!r}: only #include <allowed header>, #define, #undef, "
            "#if/#ifdef/#ifndef/#elif/#else and #endif are allowed (no "
            "#pragma, #include_next, #import, #line, #embed, #error)",
        )


def _check_include(toks: list[Token], source: str) -> None:
    line = toks[0].line
    if len(toks) != 3 or toks[2].kind not in ("header", "string"):
        shown = " ".join(t.text for t in toks[2:]) or "nothing"
        raise GateRejection(
            source,
            line,
            "include not allowed",
            f"#include {shown}: write the header literally as <name.h> "
            "(a macro-computed include is not allowed)",
        )
    header = toks[2].text[1:-1]
    if ".." in header or not _ALLOWED_INCLUDE.match(header):
        raise GateRejection(
            source,
            line,
            "include not allowed",
            f"#include {toks[2].text}: only vmlinux.h, libbpf's <bpf/...> "
            "headers and the project's <schedagent/...> headers may be included",
        )


def _check_tokens(toks: list[Token], source: str) -> set[str]:
    calls: set[str] = set()
    for i, tok in enumerate(toks):
        if tok.kind != "ident":
            continue
        name = tok.text
        nxt = toks[i + 1].text if i + 1 < len(toks) else ""
        prev = toks[i - 1].text if i else ""
        if name in _ASM:
            raise GateRejection(
                source, tok.line, "inline assembly", f"{name}: inline asm is not allowed"
            )
        if name in _PRAGMA:
            raise GateRejection(
                source,
                tok.line,
                "pragma not allowed",
                f"{name}(...): pragmas can change sections and attributes",
            )
        if name in _FILE_PROBES:
            raise GateRejection(
                source,
                tok.line,
                "file probe not allowed",
                f"{name}: a scheduler never asks which files exist",
            )
        if name == "__section__" or (name == "section" and nxt == "(" and prev in ("(", ",")):
            raise GateRejection(
                source,
                tok.line,
                "program type not allowed",
                '__attribute__((section(...))): use SEC("struct_ops/...")',
            )
        if name == "SEC" and nxt == "(":
            _check_sec(toks, i, source)
        if _RESERVED.match(name) and prev not in _TAG_KEYWORDS:
            base = allowlist.kfunc_base(name)
            if base not in ALLOWED_NAMES:
                raise GateRejection(
                    source,
                    tok.line,
                    "kfunc/helper not allowed",
                    f"{name} is not on the allow-list of sched_ext kfuncs and BPF helpers "
                    "(names starting bpf_/scx_bpf_ are reserved for them)",
                )
            if nxt == "(":
                calls.add(base)
    return calls


def _check_sec(toks: list[Token], i: int, source: str) -> None:
    parts: list[str] = []
    j = i + 2
    while j < len(toks) and toks[j].text != ")":
        if toks[j].kind != "string" or not toks[j].text.startswith('"'):
            raise GateRejection(
                source,
                toks[i].line,
                "program type not allowed",
                f"SEC({toks[j].text} ...): the section must be a plain string literal",
            )
        parts.append(toks[j].text[1:-1])
        j += 1
    sec = "".join(parts)
    if not _ALLOWED_SECTIONS.match(sec):
        raise GateRejection(
            source,
            toks[i].line,
            "program type not allowed",
            f'SEC("{sec}"): a scheduler may only contain struct_ops '
            'programs, one SEC(".struct_ops.link") and data sections',
        )


def _required_ops(text: str, code: str, source: str) -> str:
    if not re.search(r'"\.struct_ops(\.link)?"', text) and "SCX_OPS_DEFINE" not in code:
        raise GateRejection(
            source,
            0,
            "required ops missing",
            'no struct sched_ext_ops in SEC(".struct_ops.link") (or '
            "SCX_OPS_DEFINE); a scheduler must define one",
        )
    defs = [m for m in _OPS_DEF.finditer(code)]
    if len(defs) > 1:
        line = code.count("\n", 0, defs[1].start()) + 1
        raise GateRejection(
            source, line, "one scheduler per file", "a second struct sched_ext_ops is defined here"
        )
    names = _OPS_NAME.findall(text)
    if not names:
        raise GateRejection(
            source,
            0,
            "required ops missing",
            'the sched_ext_ops has no .name = "..."; the kernel requires one',
        )
    name: str = names[-1]
    if not re.fullmatch(r"[a-z0-9_]{1,63}", name):
        line = text.count("\n", 0, text.find(f'"{name}"')) + 1
        raise GateRejection(
            source, line, "ops name", f'.name = "{name}": use 1-63 characters of a-z, 0-9 and _'
        )
    if not re.search(r"\.enqueue\s*=", code):
        raise GateRejection(
            source,
            0,
            "required ops missing",
            "the sched_ext_ops has no .enqueue; schedagent requires every "
            "scheduler to decide where woken tasks go",
        )
    return name
