"""Language per window (language="auto", with a confidence threshold), the language of every segment in the
JSON, and the translate task, on the bundled multilingual model (base) and real recorded speech.

No non-English recording ships with the tests, so the switch is made with what the model itself calls another
language: a window of white noise, which base detects as Nynorsk with low confidence (0.63 measured). The
threshold decides whether that window keeps the speech window's language or takes its own."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest
from speech_data import clip, text, wer

import unique_asr
from unique_asr.window_language import choose_languages
from unique_asr.writers import render_json

WINDOW = 4 * 16000


def test_choose_languages_keeps_the_previous_language_on_a_weak_detection():
    detected = [("en", 0.99), ("cy", 0.31), ("de", 0.93), ("fr", 0.4), ("fr", 0.5)]
    assert choose_languages(detected, None, 0.5) == ["en", "en", "de", "de", "fr"]
    assert choose_languages(detected, None, 0.0) == ["en", "cy", "de", "fr", "fr"]
    assert choose_languages([("cy", 0.2), ("en", 0.3)], None, 0.5) == ["cy", "cy"]  # the first takes its guess
    assert choose_languages([("cy", 0.2)], "en", 0.5) == ["en"]  # a resumed file: the journal's last language
    # striped rows: a row whose stripe decided the window before it keeps that one's language, not the row's before
    assert choose_languages([("en", 0.9), ("cy", 0.2), ("nn", 0.3)], None, 0.5, [None, "de", None]) == [
        "en", "de", "de"]


@lru_cache(maxsize=1)
def _base():
    return unique_asr.load_model("base", device="cpu")


def _speech_then_noise() -> np.ndarray:
    speech = np.zeros(WINDOW, np.float32)
    speech[: len(clip("austen_0880"))] = clip("austen_0880")
    noise = (np.random.default_rng(0).standard_normal(WINDOW) * 0.1).astype(np.float32)
    return np.concatenate([speech, noise])


def _languages(threshold: float) -> list[tuple[float, str, str]]:
    # fixed 4 s windows (no VAD) and no silence rule, so that the noise window is decoded and has segments
    segments, info = _base().transcribe(
        _speech_then_noise(), language="auto", language_threshold=threshold, vad=False, max_window_s=4.0,
        no_speech_threshold=None, log_prob_threshold=None, compression_ratio_threshold=None, temperatures=(0.0,),
        max_new_tokens=12)
    segments = list(segments)
    assert info.windows == 2 and info.language == "en"
    payload = json.loads(render_json(segments, info))
    assert [s["language"] for s in payload["segments"]] == [s.language for s in segments]
    return [(s.start, s.language, s.text) for s in segments]


def test_auto_language_detects_every_window_and_the_threshold_keeps_the_previous_one():
    own = _languages(0.0)
    speech = [lang for start, lang, _ in own if start < 4.0]
    noise = [lang for start, lang, _ in own if start >= 4.0]
    assert speech and set(speech) == {"en"}
    assert noise and set(noise) != {"en"}, own  # the noise window is decoded in the language detected on it
    kept = _languages(0.9)
    assert {lang for _, lang, _ in kept} == {"en"}, kept  # its weak detection (< 0.9) keeps English
    assert wer(" ".join(t for start, _, t in kept if start < 4.0), text("austen_0880")) <= 0.15


def test_detected_once_by_default_and_every_segment_carries_it():
    segments, info = _base().transcribe(clip("austen_0930"))
    segments = list(segments)
    assert info.language == "en" and info.language_probability > 0.9
    assert segments and {s.language for s in segments} == {"en"}


def test_english_only_model_takes_auto_as_english():
    model = unique_asr.load_model("tiny.en", device="cpu")
    segments, info = model.transcribe(clip("austen_0880"), language="auto")
    assert info.language == "en" and {s.language for s in segments} == {"en"}
    with pytest.raises(ValueError, match="needs a multilingual model"):
        model.transcribe(clip("austen_0880"), task="translate")


def test_translate_task_on_a_multilingual_model():
    """The translate task puts <|translate|> in the prompt; English speech comes out as English text."""
    tokenizer = _base().bundle.tokenizer
    translate = tokenizer.sot_sequence("en", "translate", timestamps=True)
    assert tokenizer.translate in translate and tokenizer.transcribe not in translate
    segments, info = _base().transcribe(clip("austen_0880"), task="translate")
    hypothesis = " ".join(s.text for s in segments)
    assert info.options["decode"]["task"] == "translate"
    assert wer(hypothesis, text("austen_0880")) <= 0.2, hypothesis


def test_striped_run_decodes_every_window_in_the_language_sequential_mode_does():
    """Stripes (batched, stripe_windows 1, batch 2) over noise, noise, speech, speech: stripes [0, 1] and [2, 3]
    decode in lockstep, window 1 beside window 3 after windows 0 and 2. Window 1's weak detection keeps the
    language of window 0 (its own stripe's window before it, as in sequential mode), not the one of window 2
    (the row decoded just before it)."""
    speech_noise = _speech_then_noise()
    speech, noise = speech_noise[:WINDOW], speech_noise[WINDOW:]
    audio = np.concatenate([noise, noise[::-1].copy(), speech, speech])
    options = {"language": "auto", "language_threshold": 0.9, "vad": False, "max_window_s": 4.0,
               "no_speech_threshold": None, "log_prob_threshold": None, "compression_ratio_threshold": None,
               "temperatures": (0.0,), "max_new_tokens": 12}

    def languages(**strategy) -> dict[int, set[str]]:
        segments, info = _base().transcribe(audio, **options, **strategy)
        found: dict[int, set[str]] = {}
        for s in segments:
            found.setdefault(int(s.start // 4), set()).add(s.language)
        assert info.windows == 4
        return found

    sequential = languages(strategy="sequential")
    assert set(sequential) == {0, 1, 2, 3} and sequential[0] == sequential[1] != {"en"}, sequential
    assert sequential[2] == sequential[3] == {"en"}, sequential
    assert languages(strategy="batched", batch_size=2, stripe_windows=1) == sequential
