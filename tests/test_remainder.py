"""No speech silently lost: a window whose text ends early is decoded again from there, in both strategies,
and the coverage the run reports counts speech under segments, not windows fed to the decoder."""

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
    last = utterances[-1]
    segments, info = tiny.transcribe(audio, strategy=strategy, batch_size=4)
    segments = list(segments)
    assert info.windows == 1  # the speaker change is inside one window
    after = " ".join(s.text for s in segments if s.end > utterances[-2].end)
    assert {"go", "forward", "meters"} <= set(words(after)), [(s.start, s.end, s.text) for s in segments]
    assert all(s.start < t.start for s, t in zip(segments, segments[1:]))  # in time order, no overlap
    assert info.uncovered == []
    # coverage: the speech under segments, most of what the VAD found (segment ends trail the words a bit)
    assert 0.85 * info.speech_s <= info.decoded_s <= info.speech_s
