"""Read sched_ext's lines from the kernel log (``/dev/kmsg``), non-blocking."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KmsgLine:
    """One kernel log record: its timestamp (µs since boot) and text."""

    ts_us: int
    text: str


class KmsgReader:
    """Follows /dev/kmsg from the moment it is opened; ``None`` path disables it."""

    def __init__(self, path: str | None = "/dev/kmsg") -> None:
        self._fd: int | None = None
        if path is None:
            return
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self._fd = None

    @property
    def available(self) -> bool:
        """Whether the kernel log could be opened (root is needed)."""
        return self._fd is not None

    def read(self, prefixes: tuple[str, ...] = ("sched_ext",)) -> list[KmsgLine]:
        """Return new records that contain one of ``prefixes`` (e.g. ``"minimal:"``)."""
        lines: list[KmsgLine] = []
        while self._fd is not None:
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EPIPE:  # records overwritten under us: go on
                    continue
                break
            if not record:
                break
            head, _, text = record.decode(errors="replace").partition(";")
            fields = head.split(",")
            text = text.split("\n")[0]
            if any(p in text for p in prefixes):
                ts = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
                lines.append(KmsgLine(ts, text))
        return lines

    def close(self) -> None:
        """Close the log."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
