"""Temporary files for write-then-rename, with the user's normal file mode.

`tempfile.mkstemp` creates files with mode 0600, so every transcript and cached weight file renamed from one
stayed unreadable to other users and web servers (issue 13). Here the file is created like `open()` would
create it (0666 minus the umask), under a random name, exclusively.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_temp(directory: str | os.PathLike, name: str) -> tuple[int, Path]:
    """(open fd, path) of a new empty file `.<name>.<random>.tmp` in `directory` (mode 0666 & ~umask)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        path = Path(directory) / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
