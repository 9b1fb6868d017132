"""No speech silently lost: a window whose text ends early is decoded again from there, in both strategies,
and the coverage the run reports counts speech under segments, not windows fed to the decoder."""

import itertools

import pytest
from speech_data import joined

from unique_asr.api import load_model
from unique_asr.eval.normalise import words

# Three utterances of one reader, then another speaker, 0.5 s apart: one VAD window. tiny.en closes its
# text after the third utterance (last timestamp ~15.2 s) and ends there; the rest of the window is speech.
NAMES = ["austen_0920", "austen_0890", "austen_0880", "goforward"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny.en", device="cpu")


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
def test_speech_after_an_early_end_of_text_is_decoded(tiny, strategy):
    audio, utterances = joined(NAMES, gap_s=0.5)
    segments, info = tiny.transcribe(audio, strategy=strategy, batch_size=4)
    segments = list(segments)
    assert info.windows == 1  # the speaker change is inside one window
    after = " ".join(s.text for s in segments if s.end > utterances[-2].end)
    assert {"go", "forward", "meters"} <= set(words(after)), [(s.start, s.end, s.text) for s in segments]
    assert all(s.start < t.start for s, t in itertools.pairwise(segments))  # in time order, no overlap
    assert info.uncovered == []
    # coverage: the speech under segments, most of what the VAD found (segment ends trail the words a bit)
    assert 0.85 * info.speech_s <= info.decoded_s <= info.speech_s


def test_skipped_stretches_are_the_speech_the_timestamps_passed_over():
    """`_skipped`: the stretches of a pass before its first text and between two texts that hold >= 2 s of
    VAD speech (each decoded again on its own); pauses without speech, and speech under the texts, do not count."""
    from unique_asr.transcribe import SKIPPED_MIN_SPEECH_SAMPLES, Piece, _skipped

    sr = 16000
    assert SKIPPED_MIN_SPEECH_SAMPLES == 2 * sr
    texts = [Piece(3 * sr, 6 * sr, (1,)), Piece(10 * sr, 12 * sr, (2,)), Piece(12 * sr, 15 * sr, (3,))]
    # speech 0.5-2.8 s (before the first text), 6.2-6.9 s and 7.5-8.9 s (2.1 s between texts), 12-15 s (texts)
    speech = [(sr // 2, 28 * sr // 10), (62 * sr // 10, 69 * sr // 10), (75 * sr // 10, 89 * sr // 10),
              (10 * sr, 15 * sr)]
    assert _skipped(speech, 0, texts) == [(0, 3 * sr), (6 * sr, 10 * sr)]
    # a pass that starts later (a remainder): the stretch before its first text counts from its start (1.3 s)
    assert _skipped(speech, 15 * sr // 10, texts) == [(6 * sr, 10 * sr)]
    # nothing passed over: speech only under the texts, or pauses without speech between them
    assert _skipped([(3 * sr, 6 * sr), (10 * sr, 15 * sr)], 0, texts) == []
    # the threshold is inclusive: exactly SKIPPED_MIN_SPEECH_SAMPLES of speech between texts is decoded again
    gap = [(7 * sr, 7 * sr + SKIPPED_MIN_SPEECH_SAMPLES)]
    assert _skipped(gap, 6 * sr, texts[1:]) == [(6 * sr, 10 * sr)]
    assert _skipped([(7 * sr, 7 * sr + SKIPPED_MIN_SPEECH_SAMPLES - 1)], 6 * sr, texts[1:]) == []


def test_a_skipped_stretch_keeps_its_text_only_when_both_no_speech_tests_pass():
    """`DecodeResult.is_doubtful`: Whisper's rule calls a decode silent when the no-speech token is likely AND
    the text is unsure; a pass over a skipped stretch (our extra pass) is dropped when either holds."""
    from unique_asr.config import DecodeOptions
    from unique_asr.decoding import DecodeResult

    opts = DecodeOptions()  # no_speech_threshold 0.6, log_prob_threshold -1.0

    def result(no_speech, logprob):
        return DecodeResult((1,), "x", logprob, no_speech, 1.0, 0.0, "en", 1.0)

    assert not result(0.1, -0.3).is_doubtful(opts)
    assert result(0.7, -0.3).is_doubtful(opts) and not result(0.7, -0.3).is_silence(opts)
    assert result(0.1, -1.5).is_doubtful(opts) and not result(0.1, -1.5).is_silence(opts)
    assert result(0.7, -1.5).is_doubtful(opts) and result(0.7, -1.5).is_silence(opts)
    off = DecodeOptions(no_speech_threshold=None, log_prob_threshold=None)
    assert not result(0.99, -5.0).is_doubtful(off)
