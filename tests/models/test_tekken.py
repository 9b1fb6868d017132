"""Voxtral's own tokenizer file (tekken.json, mistral-common's format, as mistralai/Voxtral-* ship it, with no
tokenizer.json): a tiny random Voxtral checkpoint written by transformers with a locally built tekken.json loads
through transformers' Tekken converter (no mistral-common needed), builds mistral-common's transcription request
from the file's special-token ranks, transcribes, and a broken file is a one-line ModelError."""

from __future__ import annotations

import pytest
from speech_checkpoints import TEKKEN_NUM_SPECIAL, TEKKEN_SPECIALS, voxtral
from speech_data import AUSTEN, clip

import unique_asr
from unique_asr.errors import ModelError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("voxtral-tekken")
    voxtral(root, seed=3, tekken=True)
    assert (root / "tekken.json").exists() and not (root / "tokenizer.json").exists()
    return root


def test_tekken_checkpoint_builds_the_transcription_request_and_transcribes(folder):
    model = unique_asr.load_model(str(folder), device="cpu")
    ours = model.bundle.model
    ids = TEKKEN_SPECIALS
    lang = tuple(TEKKEN_NUM_SPECIAL + b for b in b"lang:en")  # byte tokens: rank + the special-token count
    prompt = ours.prompt("en")
    assert prompt.prompt_ids == (ids["<s>"],)
    assert prompt.chunk_prefix_ids == (ids["[INST]"], ids["[BEGIN_AUDIO]"])
    assert prompt.chunk_suffix_ids == (ids["[/INST]"], *lang, ids["[TRANSCRIBE]"])
    assert prompt.eos_ids == (ids["</s>"],)
    assert ours.prompt(None).chunk_suffix_ids == (ids["[/INST]"], ids["[TRANSCRIBE]"])
    assert model.bundle.tokenizer.decode([ids["<s>"], *lang, ids["</s>"]]) == "lang:en"  # control tokens dropped
    segments, info = model.transcribe(clip(AUSTEN[0]), max_new_tokens=4, language="en")
    segments = list(segments)
    assert info.windows >= 1 and len(segments) <= info.windows


def test_broken_tekken_file_is_a_one_line_model_error(folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "tekken.json").write_text("{not json")
    with pytest.raises(ModelError, match="tokenizer") as err:
        unique_asr.load_model(str(broken), device="cpu")
    assert "\n" not in str(err.value)
