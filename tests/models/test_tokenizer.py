"""WhisperTokenizer vs transformers' tokenizer on the same tokenizer.json, and Whisper's conventions."""

from __future__ import annotations

import json
import os

import pytest
from transformers import WhisperTokenizer as HFWhisperTokenizer

from unique_asr.errors import ModelError
from unique_asr.models.registry import BUNDLED
from unique_asr.models.tokenizer import WhisperTokenizer

TEXTS = [
    " Hello world, this is a test.",
    "Numbers 1,234.56 and 3rd place!",
    " naïve café — “quotes” ♪",
    "  leading spaces\nand a newline",
    "日本語のテキスト",
    "",
]
N_VOCAB = {"tiny.en": 51864, "base": 51865}


@pytest.fixture(params=["tiny.en", "base"])
def pair(request):
    path = BUNDLED[request.param].tokenizer.locate()
    return (
        request.param,
        WhisperTokenizer(path, N_VOCAB[request.param]),
        HFWhisperTokenizer(tokenizer_file=path),
    )


def test_encode_decode_match_transformers(pair):
    _, ours, hf = pair
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False)
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True) == text
    mixed = [ours.sot, ours.no_timestamps] + ours.encode(" Hi there.") + [ours.eot]
    assert ours.decode(mixed) == hf.decode(mixed, skip_special_tokens=True) == " Hi there."


def test_special_tokens_match_transformers(pair):
    name, ours, hf = pair
    ids = hf.convert_tokens_to_ids
    assert ours.eot == ids("<|endoftext|>") and ours.sot == ids("<|startoftranscript|>")
    assert (ours.translate, ours.transcribe) == (ids("<|translate|>"), ids("<|transcribe|>"))
    assert (ours.sot_prev, ours.sot_lm, ours.no_timestamps) == (
        ids("<|startofprev|>"),
        ids("<|startoflm|>"),
        ids("<|notimestamps|>"),
    )
    assert ours.no_speech == ids("<|nospeech|>" if name == "base" else "<|nocaptions|>")
    assert len(ours.language_codes) == 99 and ours.language_codes[:3] == ("en", "zh", "de")
    assert ours.language_token("fr") == ids("<|fr|>")
    assert ours.is_multilingual == (name == "base")


def test_sot_sequence():
    base = WhisperTokenizer(BUNDLED["base"].tokenizer.locate(), 51865)
    hf = HFWhisperTokenizer(tokenizer_file=BUNDLED["base"].tokenizer.locate())
    hf.set_prefix_tokens(language="german", task="translate", predict_timestamps=False)
    assert base.sot_sequence("de", "translate", timestamps=False) == hf.prefix_tokens
    assert base.sot_sequence(None, "transcribe") == [base.sot, base.transcribe]
    tiny = WhisperTokenizer(BUNDLED["tiny.en"].tokenizer.locate(), 51864)
    assert tiny.sot_sequence("en") == [tiny.sot]
    assert tiny.sot_sequence("en", timestamps=False) == [tiny.sot, tiny.no_timestamps]
    with pytest.raises(ValueError):
        tiny.sot_sequence("fr")
    with pytest.raises(ValueError):
        base.sot_sequence("xx")


def test_timestamps_follow_notimestamps():
    base = WhisperTokenizer(BUNDLED["base"].tokenizer.locate(), 51865)
    hf = HFWhisperTokenizer(tokenizer_file=BUNDLED["base"].tokenizer.locate())
    # base's tokenizer.json lists the timestamp tokens: our id arithmetic must land on them
    for i in (0, 1, 50, 1500):
        assert hf.convert_ids_to_tokens(base.timestamp_begin + i) == f"<|{i * 0.02:.2f}|>"
    tiny = WhisperTokenizer(BUNDLED["tiny.en"].tokenizer.locate(), 51864)
    ids = [tiny.sot, tiny.timestamp_begin] + tiny.encode(" Hello world.") + [tiny.timestamp_begin + 54]
    ids += tiny.encode(" Again.") + [tiny.timestamp_begin + 1500, tiny.eot]
    assert tiny.decode_with_timestamps(ids) == "<|0.00|> Hello world.<|1.08|> Again.<|30.00|>"
    assert tiny.decode(ids) == " Hello world. Again."


def test_non_speech_tokens_match_ctranslate2_suppress_list(pair):
    """The bundled config.json carries the suppress list its converter derived from OpenAI's rule."""
    name, ours, _ = pair
    folder = os.path.dirname(BUNDLED[name].tokenizer.locate())
    suppress = json.load(open(os.path.join(folder, "config.json")))["suppress_ids"]
    assert list(ours.non_speech_tokens) == [i for i in suppress if i < ours.eot]


def test_unreadable_tokenizer_is_model_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="tokenizer.json"):
        WhisperTokenizer(str(bad), 51865)
    bad.write_text(json.dumps(json.load(open(BUNDLED["tiny.en"].tokenizer.locate())) | {"added_tokens": []}))
    with pytest.raises(ModelError, match="lacks the special token"):
        WhisperTokenizer(str(bad), 51864)
