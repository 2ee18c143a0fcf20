"""Reading files an operator names (config, key files) without trusting what they are.

A path in models.d/ or an `api_key_file:` may be a link to /dev/zero (read forever, memory
without bound), a FIFO (open blocks until a writer comes), a folder, or a 50 MB file that
the YAML parser chews for half a minute (issue 18: `vllmctl check` reached 700 MB in under a
second on /dev/zero and blocked for ever on a FIFO). So: regular files only, checked on the
open descriptor (no window between a check and the read), opened non-blocking (open(2):
O_NONBLOCK makes the open of a FIFO return at once), and never more than a cap read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CONFIG_CAP = 1 << 20  # models.yaml and each drop-in: hundreds of models fit in 100 KB
KEYS_CAP = 1 << 20  # a file of bearer keys, one a line
SECRET_CAP = 64 << 10  # one key (api_key_file)


class Refused(OSError):
    """The path is not a regular file this process may read whole: the message says why
    (WHY: the same without the path, for a message already about that file)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path} {why}")
        self.why = why


def read_bytes(path: Path, cap: int) -> bytes:
    """PATH's bytes, or Refused (not a regular file, or over CAP bytes); other OSErrors
    (absent, permission denied) pass as they are."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(path, f"is {kind(st.st_mode)}, not a regular file")
        if st.st_size > cap:
            raise Refused(path, f"is {st.st_size} bytes; the most read is {cap}")
        # The size may grow after fstat (a file being written): read at most one byte more
        # than the cap, so a file that grew is refused the same way.
        chunks, got = [], 0
        while got <= cap:
            chunk = os.read(fd, min(1 << 16, cap + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > cap:
            raise Refused(path, f"grew past {cap} bytes while it was read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path, cap: int) -> str:
    """read_bytes decoded as UTF-8 (UnicodeDecodeError, a ValueError, when it is not)."""
    return read_bytes(path, cap).decode("utf-8")


def kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"
