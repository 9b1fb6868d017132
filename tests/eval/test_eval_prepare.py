"""Dataset preparation on small fixtures written here in each source's own format."""

import json

import numpy as np
import pytest
import soundfile as sf

from unique_asr.errors import MissingToolError, UniqueASRError
from unique_asr.eval import prepare
from unique_asr.eval.manifest import load_dataset, read_jsonl

RATE = 16000


def _tone(seconds, rate=RATE, freq=220.0):
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _rows(path):
    return list(read_jsonl(path))


STM = """;; comment line
TalkA 1 TalkA 0.00 2.00 <o,f0,female> ignore_time_segment_in_scoring
TalkA 1 TalkA 4.50 6.00 <o,f0,female> and that 's it {NOISE} <unk>
TalkA 1 TalkA 2.00 4.50 <o,f0,female> i 'd like to share a story
"""


def test_tedlium(tmp_path):
    root = tmp_path / "TEDLIUM" / "test"
    (root / "stm").mkdir(parents=True)
    (root / "sph").mkdir()
    (root / "stm" / "TalkA.stm").write_text(STM, encoding="utf-8")
    sf.write(str(root / "sph" / "TalkA.sph"), _tone(6.5), RATE, format="NIST", subtype="PCM_16")
    out = tmp_path / "out"
    [row] = _rows(prepare.prepare_tedlium(root, out))
    assert row["id"] == "TalkA" and row["duration"] == 6.5 and row["sample_rate"] == RATE
    assert row["text"] == "i'd like to share a story and that's it"
    assert [(s["start"], s["end"]) for s in row["segments"]] == [(2.0, 4.5), (4.5, 6.0)]
    assert load_dataset(out / "manifest.jsonl")[0].audio == (root / "sph" / "TalkA.sph").resolve()
    (root / "sph" / "TalkA.sph").unlink()
    with pytest.raises(UniqueASRError, match="TalkA.sph"):
        prepare.prepare_tedlium(root, out)


NLP = """token|speaker|ts|endTs|punctuation|case|tags|wer_tags
Good|0||||UC|[]|[]
morning|0|||,|LC|['5:TIME']|['5']
welcome|0||||LC|[]|[]
to|0||||LC|[]|[]
Acme|0||||UC|['7:ORG']|['7']
Widgets|0|||.|UC|['7:ORG']|['7']
I'm|1||||CA|['8:CONTRACTION']|['8']
Jane|1||||UC|['9:PERSON']|['9']
Doe|1|||.|UC|['9:PERSON']|['9']
"""


def test_earnings(tmp_path):
    root = tmp_path / "earnings21"
    (root / "transcripts" / "nlp_references").mkdir(parents=True)
    (root / "transcripts" / "wer_tags").mkdir(parents=True)
    (root / "media").mkdir()
    (root / "transcripts" / "nlp_references" / "4320211.nlp").write_text(NLP, encoding="utf-8")
    tags = {
        "5": {"entity_type": "TIME"},
        "7": {"entity_type": "ORG"},
        "8": {"entity_type": "CONTRACTION"},
        "9": {"entity_type": "PERSON"},
    }
    (root / "transcripts" / "wer_tags" / "4320211.wer_tag.json").write_text(
        json.dumps(tags), encoding="utf-8"
    )
    sf.write(str(root / "media" / "4320211.mp3"), _tone(3.0), RATE, format="MP3")
    parsed = prepare.parse_nlp(root / "transcripts" / "nlp_references" / "4320211.nlp")
    assert parsed.text == "Good morning, welcome to Acme Widgets. I'm Jane Doe."
    assert ("Acme Widgets", "ORG") in parsed.entities and ("morning", "TIME") in parsed.entities
    [row] = _rows(prepare.prepare_earnings(root, tmp_path / "out"))
    assert row["id"] == "4320211" and row["entities"] == ["Acme Widgets", "Jane Doe"]
    assert row["path"].endswith("media/4320211.mp3") and abs(row["duration"] - 3.0) < 0.2
    [row] = _rows(prepare.prepare_earnings(root, tmp_path / "out", classes=["TIME"]))
    assert row["entities"] == ["morning"]
    (root / "bad.nlp").write_text("not|an|nlp\n", encoding="utf-8")
    with pytest.raises(UniqueASRError):
        prepare.prepare_earnings(root, tmp_path / "out")


def test_librispeech_chapters_joined_in_order(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "test-other" / "1688" / "142285"
    chapter.mkdir(parents=True)
    lengths = {"1688-142285-0000": 1.0, "1688-142285-0001": 0.5, "1688-142285-0002": 0.75}
    for k, (uid, sec) in enumerate(lengths.items()):
        sf.write(str(chapter / f"{uid}.flac"), _tone(sec, freq=200 + 100 * k), RATE)
    (chapter / "1688-142285.trans.txt").write_text(
        "1688-142285-0000 THERE'S IRON\n1688-142285-0001 THEY SAY\n1688-142285-0002 IN ALL OUR BLOOD\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    [row] = _rows(prepare.prepare_librispeech(tmp_path / "LibriSpeech", out, gap_s=0.25))
    assert row["id"] == "1688-142285" and row["text"] == "THERE'S IRON THEY SAY IN ALL OUR BLOOD"
    assert [(s["id"], s["start"], s["end"]) for s in row["segments"]] == [
        ("1688-142285-0000", 0.0, 1.0),
        ("1688-142285-0001", 1.25, 1.75),
        ("1688-142285-0002", 2.0, 2.75),
    ]
    assert row["duration"] == 2.75
    joined, rate = sf.read(str(out / row["path"]), dtype="float32")
    assert rate == RATE and len(joined) == round(2.75 * RATE)
    original, _ = sf.read(str(chapter / "1688-142285-0001.flac"), dtype="float32")
    np.testing.assert_allclose(joined[round(1.25 * RATE) : round(1.75 * RATE)], original, atol=1e-4)
    assert np.all(joined[RATE : round(1.25 * RATE)] == 0)


def test_folder(tmp_path):
    src = tmp_path / "recordings"
    (src / "day1").mkdir(parents=True)
    sf.write(str(src / "day1" / "talk.wav"), _tone(1.0), RATE)
    (src / "day1" / "talk.txt").write_text("Hello\nthere.\n", encoding="utf-8")
    sf.write(str(src / "untranscribed.flac"), _tone(0.5), RATE)
    [row] = _rows(prepare.prepare_folder(src, tmp_path / "out"))
    assert row == {
        "id": "day1_talk",
        "path": "../recordings/day1/talk.wav",
        "duration": 1.0,
        "sample_rate": RATE,
        "text": "Hello there.",
    }
    (src / "day1" / "broken.wav").write_bytes(b"RIFF not really")
    (src / "day1" / "broken.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UniqueASRError, match="broken.wav"):
        prepare.prepare_folder(src, tmp_path / "out")
    with pytest.raises(UniqueASRError, match="no audio files"):
        prepare.prepare_folder(tmp_path / "out", tmp_path / "out2")


def test_hugging_face_without_datasets_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(MissingToolError, match="pip install datasets"):
        prepare.prepare_hf("org/some-set", tmp_path / "out")


def test_hf_audio_values():
    data, rate = prepare._hf_audio({"array": [0.0, 0.5, -0.5], "sampling_rate": 8000})
    assert rate == 8000 and data.dtype == np.float32 and data.tolist() == [0.0, 0.5, -0.5]


def test_prepare_data_cli(tmp_path, scripts, capsys):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(str(src / "a.flac"), _tone(0.5), RATE)
    (src / "a.txt").write_text("a", encoding="utf-8")
    cli = scripts("prepare_data")
    assert cli.main(["folder", str(src), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip().endswith("manifest.jsonl")
    assert cli.main(["tedlium", str(tmp_path / "empty"), str(tmp_path / "o2")]) == 1
    assert "prepare_data: error: no stm files" in capsys.readouterr().err
