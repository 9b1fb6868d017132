"""scripts/stress_errors.py: word errors attributed to the reference utterance they belong to."""

from __future__ import annotations

from script_loader import load_script


def test_errors_land_on_their_utterance():
    errors = load_script("stress_errors").utterance_errors
    utterances = ["the cat sat", "on the mat", "and slept"]
    # substitution in the first, deletion in the second, two insertions after the second's last word
    assert errors(utterances, ["the", "dog", "sat", "on", "mat", "oh", "no", "and", "slept"]) == [1, 3, 0]
    assert errors(utterances, ["the", "cat", "sat", "on", "the", "mat", "and", "slept"]) == [0, 0, 0]
    assert errors(utterances, []) == [3, 3, 2]  # everything deleted


def test_eval_stress_set_types_decode_and_window_options():
    """eval_stress.py --set: decode options are accepted and booleans parsed (bool('false') is True);
    stress_errors.py keeps only the options that shape the windows."""
    parse = load_script("eval_stress").parse_set
    assert parse("condition_on_previous_text=false,speech_pad_ms=400") == {
        "condition_on_previous_text": False, "speech_pad_ms": 400}
    assert parse("condition_on_previous_text=True") == {"condition_on_previous_text": True}
    assert load_script("stress_errors").parse_set("condition_on_previous_text=false,min_silence_ms=2000") == {
        "min_silence_ms": 2000}
