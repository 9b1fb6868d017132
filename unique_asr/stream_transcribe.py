"""strategy="streaming": a decoder-only speech-LLM transcribes whole recordings, each as one sequence.

VAD-cut windows (at most the model's encoder window, 30 s for real checkpoints) enter the recording's sequence in
order, each followed by its transcript (unique_asr.stream_decoding), so the whole recording stays in context.
A window's transcript is one Segment spanning the window's samples (start/end sample indices over the sample
rate: no drift). Journal, coverage fields and typed errors behave as for Whisper (unique_asr.transcribe):
finished windows are journaled with their transcript ids; on resume the journaled windows are replayed into the
sequence (teacher-forced, so the context is the same) and decoding continues after them.

`transcribe_stream` is one file (the API's lazy iterator); `transcribe_many` decodes many files together, one
row of the paged cache each (TranscribeOptions.batch_size rows, continuous batching).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace

from unique_asr.audio import SAMPLE_RATE, probe
from unique_asr.config import DecodeOptions, TranscribeOptions
from unique_asr.coverage import EMPTY_TEXT, Uncovered
from unique_asr.errors import UniqueASRError
from unique_asr.journal import Journal, WindowRecord, account
from unique_asr.progress import Progress
from unique_asr.stream_decoding import RowDecoder, WindowJob, WindowResult
from unique_asr.types import Segment, TranscriptionInfo
from unique_asr.vad import VadModel
from unique_asr.windows import iter_windows

# Whisper's decoding options that a speech-LLM's decoding (greedy or beam search over the whole recording, its
# checkpoint's own prompt) has no use for: set away from their defaults, they are refused rather than ignored.
WHISPER_DECODE_OPTIONS = ("task", "temperatures", "best_of", "compression_ratio_threshold", "log_prob_threshold",
                          "no_speech_threshold", "condition_on_previous_text", "initial_prompt", "suppress_blank",
                          "suppress_tokens", "language_threshold")


def check_options(options: TranscribeOptions) -> None:
    """What a speech-LLM cannot do yet, as one-line ValueErrors."""
    default = DecodeOptions()
    unused = [name for name in WHISPER_DECODE_OPTIONS if getattr(options.decode, name) != getattr(default, name)]
    if options.stripe_windows:
        unused.append("stripe_windows")
    if unused:
        raise ValueError(f"{', '.join(unused)}: Whisper decoding option{'s' if len(unused) > 1 else ''} that a "
                         "speech-LLM does not use (it decodes greedily or with beams, its checkpoint's prompt "
                         "over the whole recording); leave them at their defaults")
    if options.strategy not in ("auto", "streaming"):
        raise ValueError(f"strategy {options.strategy!r} is for Whisper models; speech-LLMs use 'streaming'")
    if options.decode.beam_size > 1 and options.decode.patience != 1.0:
        raise ValueError("patience is Whisper's beam option; a speech-LLM's beam search is transformers' "
                         "(it stops when no running beam can beat the finished ones)")
    if getattr(options, "word_timestamps", False):
        raise ValueError("word_timestamps need Whisper's cross-attention; speech-LLM segments are timed by window")


def _prompt_language(options: TranscribeOptions) -> str | None:
    """The language a speech-LLM's prompt names; None (and "auto") leave it to the model, window by window."""
    language = options.decode.language
    return None if language == "auto" else language


class Recording:
    """One file in progress: its windows as WindowJobs, its segments, journal and coverage."""

    def __init__(self, bundle, source, options: TranscribeOptions, journal: Journal | None, vad: VadModel | None):
        model = bundle.model
        self.source, self.bundle, self.journal = source, bundle, journal
        self.error: UniqueASRError | None = None
        duration = probe(source).duration_s
        self.records = list(journal.records) if journal is not None else []
        language = _prompt_language(options)
        options = replace(options, strategy="streaming")
        self.info = TranscriptionInfo(language or "auto", 1.0 if language else 0.0, duration or 0.0, bundle.name,
                                      asdict(options), attention=asdict(bundle.sparsity))
        for record in self.records:
            account(self.info, record)
        self.info.speech_s = sum(r.speech_s for r in self.records)
        if journal is not None:
            journal.start(bundle.name, self.info.options, duration, self.info.language,
                          self.info.language_probability)
        window_s = min(options.max_window_s, model.window_s)
        self.windows = iter_windows(source, replace(options, max_window_s=window_s), vad, 0)
        self.next_id = sum(len(r.segments) for r in self.records)
        self.eos = set(model.prompt(language).eos_ids)
        self.report_uncovered_s = options.report_uncovered_s

    def report(self, progress, done: bool = False) -> None:
        """Tell `progress` where this recording stands (start, every finished window, end), as for Whisper."""
        if progress is not None:
            progress(Progress(self.info.decoded_s, max(self.info.speech_s, self.windows.speech_s),
                              self.windows.duration_s, self.info.duration_s or None, self.info.windows, done))

    def replayed(self) -> Iterator[Segment]:
        for record in self.records:
            yield from record.segments

    def jobs(self) -> Iterator[WindowJob]:
        """Every window in order; journaled ones carry their transcript to replay. A read error ends the jobs
        and is kept in `error` (the other recordings of a batch go on)."""
        try:
            for window in self.windows:
                if window.index < len(self.records):
                    record = self.records[window.index]
                    if (record.start_sample, record.end_sample) != (window.start_sample, window.end_sample):
                        raise UniqueASRError(f"{self.journal.path}: journaled windows do not match this audio; "
                                             "run again without resume to start over")
                    yield WindowJob(window.audio, window, tuple(record.prompt))
                else:
                    yield WindowJob(window.audio, window)
        except UniqueASRError as exc:
            self.error = exc
        self.info.speech_s = self.windows.speech_s
        if not self.info.duration_s:
            self.info.duration_s = self.windows.duration_s

    def finish(self, result: WindowResult) -> list[Segment]:
        """A window's transcript -> its segment (none for empty text), journaled; replayed windows give none."""
        window = result.job.key
        self.info.speech_s = max(self.info.speech_s, self.windows.speech_s)
        if result.job.forced is not None:
            return []
        text_ids = [t for t in result.tokens if t not in self.eos]
        text = self.bundle.tokenizer.decode(text_ids)
        segments = []
        if text.strip():
            segments.append(Segment(self.next_id, window.start_sample / SAMPLE_RATE, window.end_sample / SAMPLE_RATE,
                                    text, tuple(text_ids), result.sum_logprob / (len(result.tokens) or 1)))
            self.next_id += 1
        # coverage as for Whisper: the speech that emitted segments cover (a segment spans its window)
        uncovered = () if segments or window.speech_s < self.report_uncovered_s else (
            Uncovered(window.start_sample / SAMPLE_RATE, window.end_sample / SAMPLE_RATE, EMPTY_TEXT),)
        record = WindowRecord(window.index, window.start_sample, window.end_sample, window.speech_s, tuple(segments),
                              tuple(result.tokens), not segments, window.speech_s if segments else 0.0, uncovered,
                              int(result.looped), int(result.looped and bool(segments)))
        if self.journal is not None:
            self.journal.append(record)
        account(self.info, record)
        return segments


def _vad(bundle, options: TranscribeOptions) -> VadModel | None:
    if not options.vad:
        return None
    return bundle.vad_model or VadModel(next(bundle.model.parameters()).device)


def _decoder(bundle, rows: int, options: TranscribeOptions, cuda_graph: bool = True) -> RowDecoder:
    """Greedy, or beam search (DecodeOptions.beam_size, length_penalty; unique_asr.stream_beam)."""
    decode = options.decode
    return RowDecoder(bundle.model, rows, _prompt_language(options), decode.max_new_tokens, cuda_graph=cuda_graph,
                      beam=decode.beam_size, length_penalty=decode.length_penalty,
                      repetition=(decode.repetition_ngram, decode.repetition_max))


def transcribe_stream(bundle, source, options: TranscribeOptions | None = None, *, journal: Journal | None = None,
                      progress=None) -> tuple[Iterator[Segment], TranscriptionInfo]:
    """One file with a speech-LLM (one row): (lazy segment iterator, info); see the module docstring.
    progress: called with a `Progress` at the start, after every finished window and at the end."""
    options = options or TranscribeOptions()
    check_options(options)
    recording = Recording(bundle, source, options, journal, _vad(bundle, options))
    decoder = _decoder(bundle, 1, options)

    def segments() -> Iterator[Segment]:
        recording.report(progress)
        yield from recording.replayed()
        for event in decoder.run([recording]):
            if isinstance(event, WindowResult):
                found = recording.finish(event)
                if event.job.forced is None:
                    recording.report(progress)
                yield from found
        if recording.error is not None:
            raise recording.error
        recording.report(progress, done=True)

    return segments(), recording.info


@dataclass
class FileResult:
    """One file of `transcribe_many`: its index in the inputs, segments and info, or the error that stopped it."""

    index: int
    segments: list[Segment]
    info: TranscriptionInfo | None
    error: UniqueASRError | None = None


def transcribe_many(bundle, sources: Sequence, options: TranscribeOptions, journals: Sequence[Journal | None],
                    on_segment=None, *, cuda_graph: bool = True) -> Iterator[FileResult]:
    """Decode `sources` together, options.batch_size at a time as rows of one paged cache (a finished file's
    row takes the next file). Yields each file's FileResult as it finishes (not in input order); a file that
    fails (unreadable audio, a journal of other audio) yields its error and the others go on.
    on_segment(index, segment): called as each window's segment is decoded (progress).
    cuda_graph: on CUDA, replay the decode step as a CUDA graph (False: eager steps, for comparison)."""
    check_options(options)
    vad = _vad(bundle, options)
    started: dict[int, Recording] = {}
    collected: dict[int, list[Segment]] = {}
    failed: list[FileResult] = []

    def recordings():
        for index, (source, journal) in enumerate(zip(sources, journals)):
            try:
                recording = Recording(bundle, source, options, journal, vad)
            except UniqueASRError as exc:
                failed.append(FileResult(index, [], None, exc))
                continue
            recording.index = index
            started[index] = recording
            collected[index] = list(recording.replayed())
            yield recording

    rows = max(1, min(options.batch_size, len(sources)))
    decoder = _decoder(bundle, rows, options, cuda_graph)
    for event in decoder.run(recordings()):
        while failed:
            yield failed.pop(0)
        if isinstance(event, WindowResult):
            for segment in event.recording.finish(event):
                collected[event.recording.index].append(segment)
                if on_segment is not None:
                    on_segment(event.recording.index, segment)
        else:
            yield FileResult(event.index, collected.pop(event.index), event.info, event.error)
    while failed:
        yield failed.pop(0)
