"""Host tests read procfs unless they ask for the observer.

Most host tests drive the procfs readers over fake trees; the real observer (this
host's kernel) would answer them instead. ``tests/unit/test_observer.py`` switches it
back on for itself.
"""

from __future__ import annotations

import pytest

from schedagent.kernel import observer


@pytest.fixture(autouse=True)
def _procfs_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(observer.OFF_ENV, "off")
