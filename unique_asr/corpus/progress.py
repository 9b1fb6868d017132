"""One progress line for the whole job, whatever the launcher: hours of audio done of the total, files,
throughput (x realtime over this run), ETA and failures. A tqdm bar on a terminal; under a log file tqdm
redraws at most every `interval` seconds."""

from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm


class Progress:
    """Counts are absolute: launchers whose workers are other processes (torchrun ranks) read totals from
    their shared counters and `update` them; local workers call `advance` and `file_done`."""

    def __init__(self, total_s: float, total_files: int, done_s: float = 0.0, done_files: int = 0,
                 failed: int = 0, *, quiet: bool = False, interval: float = 1.0):
        self.total_files, self.failed = total_files, failed
        self.files = done_files
        self.start_s, self.started = done_s, time.perf_counter()
        self._lock = threading.Lock()
        # tqdm puts ", " before the postfix: it follows "h audio" as a list
        self.bar = tqdm(total=total_s / 3600, initial=min(done_s, total_s) / 3600, unit="h", disable=quiet,
                        file=sys.stderr, mininterval=interval, dynamic_ncols=True,
                        bar_format="corpus {n:.2f}/{total:.2f} h audio{postfix} |{bar}| [{elapsed}<{remaining}]")
        self._show()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.bar.update(min(seconds / 3600, self.bar.total - self.bar.n))  # float sums may overshoot
            self._show(refresh=False)

    def file_done(self, ok: bool) -> None:
        with self._lock:
            self.files += 1
            self.failed += 0 if ok else 1
            self._show()

    def update(self, done_s: float, files: int, failed: int) -> None:
        with self._lock:
            self.files, self.failed = files, failed
            self.bar.update(min(done_s / 3600, self.bar.total) - self.bar.n)
            self._show()

    def throughput(self) -> float:
        """Audio seconds per wall second in this run (files finished by an earlier run do not count)."""
        wall = time.perf_counter() - self.started
        return (self.bar.n * 3600 - self.start_s) / wall if wall > 0 else 0.0

    def _show(self, refresh: bool = True) -> None:
        text = f"{self.files}/{self.total_files} files, {self.throughput():.1f}x realtime, {self.failed} failed"
        self.bar.set_postfix_str(text, refresh=refresh)

    def close(self) -> None:
        self.bar.close()


class Poller:
    """Calls `tick` every `interval` seconds on a daemon thread until stopped (rank 0 reading the ranks'
    shared counters while it transcribes its own shard)."""

    def __init__(self, tick, interval: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(tick, interval), daemon=True)
        self._thread.start()

    def _run(self, tick, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                tick()
            except Exception:  # a missed progress update must never stop the job
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
