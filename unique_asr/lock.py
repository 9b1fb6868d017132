"""One writer per output: an OS advisory lock on `output_dir/.<name>.lock`, held while a file is transcribed,
journaled and its outputs written.

The lock is `fcntl.flock` on an open file, so the kernel releases it when the holder exits in any way
(kill -9 included): a lock file left behind by a dead run is stale by construction and never in the way. Two
runs on the same input and output folder would otherwise append the same windows to one journal and emit them
twice (issue 18: `header, win0, win0, win1` -> lines 1-6 of the transcript doubled).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from unique_asr.errors import OutputError


class OutputLock:
    """Exclusive lock on `path` (a context manager). `acquire` raises OutputError naming the holder's pid when
    another process holds it. The holder removes the lock file on release; a process that opened the old file
    just before that notices (the path then names another inode, or none) and locks afresh."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise OutputError(f"{self.path}: cannot create the output lock ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputError(
                    f"{self.what}: another run (pid {holder}) is transcribing into the same output files; "
                    "wait for it to finish or stop it, then run again"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed this file after we opened it: lock the new one
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # a full disk: the lock holds all the same, only the pid is not shown to a second run
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding it, so no one locks a file about to vanish
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    """The pid the holder wrote into the lock file ("unknown" if it has not written it yet)."""
    for _ in range(20):  # the holder writes its pid right after locking: wait up to 0.2 s for it
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"
