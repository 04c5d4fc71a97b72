"""The adversarial corpus: one source per trick, each declaring how it must be refused.

Every ``*.bpf.c`` here carries a line ``// expect: CODE SUBSTRING``: the exit code
``schedagent policies verify FILE`` must return (0 for the honest scheduler) and a
substring the refusal must contain, naming what was found (issue 12).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parent
#: The stand-in vmlinux.h for host tests (the host kernel has no sched_ext).
HOST_INCLUDE = CORPUS / "include"
_EXPECT = re.compile(r"^// expect: (\d+) (.+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Case:
    """One corpus file and the refusal it must get."""

    path: Path
    exit_code: int
    reason: str

    @property
    def name(self) -> str:
        """The file's stem (without .bpf.c)."""
        return self.path.name.removesuffix(".bpf.c")


def cases() -> list[Case]:
    """Every corpus file with its expectation, sorted by name."""
    found: list[Case] = []
    for path in sorted(CORPUS.glob("*.bpf.c")):
        match = _EXPECT.search(path.read_text())
        if match is None:
            raise ValueError(f"{path} has no '// expect: CODE REASON' line")
        found.append(Case(path, int(match[1]), match[2].strip()))
    return found
