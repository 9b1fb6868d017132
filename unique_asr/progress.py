"""Progress of one transcription over seconds of detected speech: what `transcribe` reports after every
finished window, and the CLI's bar that shows it.

The work is the detected speech (silence between windows is never decoded), so the bar counts speech seconds.
The VAD streams ahead of the decoder, so the speech total is known exactly only at the end; until then it is
estimated from the speech density of the audio scanned so far (speech so far + unscanned audio x density), and
the ETA is tqdm's, from the measured rate of decoded speech seconds. At the end the total is the detected speech
and the bar stands at it (issue 18: a bar that sat at `6/600.0 s` for 13 minutes and ended at `6/6.5 s`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tqdm import tqdm


@dataclass(frozen=True)
class Progress:
    """decoded_s: speech seconds in finished windows (journaled ones included); speech_s: speech the VAD found
    so far; scanned_s: audio seconds the VAD has read; duration_s: the audio's length (None: unknown, stdin);
    windows: finished windows; done: the last window is finished (speech_s is then the true total)."""

    decoded_s: float
    speech_s: float
    scanned_s: float
    duration_s: float | None
    windows: int
    done: bool = False

    @property
    def total_s(self) -> float | None:
        """Speech seconds to decode in all: exact when done, else estimated (None: nothing to go on yet)."""
        if self.done:
            return self.speech_s
        if not self.duration_s or self.scanned_s <= 0:
            return None
        rest = max(0.0, self.duration_s - self.scanned_s)
        return max(self.speech_s + rest * self.speech_s / self.scanned_s, self.decoded_s)


class SpeechBar:
    """A tqdm bar over speech seconds fed with `Progress` reports (a callable: pass it as `progress=`).
    The first report starts it at the speech already decoded (windows replayed from a journal), so the
    measured rate, and with it the ETA, counts only this run's decoding."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} s speech [{elapsed}<{remaining}]"

    def __init__(self, label: str, disable: bool = False):
        self.label, self.disable = label, disable
        self.bar: tqdm | None = None

    def __call__(self, report: Progress) -> None:
        total = report.total_s
        total = None if total is None else round(total, 1)
        if self.bar is None:
            self.bar = tqdm(total=total, initial=report.decoded_s, desc=self.label, disable=self.disable,
                            file=sys.stderr, bar_format=self.FORMAT, dynamic_ncols=True)
            return
        self.bar.total = total
        # to a tenth, as the total, and set rather than summed (the sum of tenths drifts below the total in
        # float): at the end a full bar, not 74.49999 of 74.5 drawn as 9.9 tenths of it
        decoded = round(report.decoded_s, 1)
        self.bar.update(decoded - self.bar.n)
        self.bar.n = decoded
        if report.done:
            self.bar.refresh()

    @property
    def total(self) -> float | None:
        return None if self.bar is None else self.bar.total

    @property
    def n(self) -> float:
        return 0.0 if self.bar is None else self.bar.n

    def write(self, text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
