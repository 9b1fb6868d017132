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
