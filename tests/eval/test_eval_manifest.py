import json

import pytest

from unique_asr.errors import UniqueASRError
from unique_asr.eval.manifest import (
    ManifestWriter,
    completed,
    load_dataset,
    make_record,
    pending,
    read_jsonl,
    write_jsonl,
)
from unique_asr.types import Segment, TranscriptionInfo

RUN = {
    "model": "tiny.en",
    "dataset": "d",
    "normaliser": "whisper_english",
    "transcribe": {"vad": True},
    "decode": {"beam_size": 1, "temperatures": [0.0]},
    "sparsity": {"mode": "unique", "budget": 256},
}


def _dataset(tmp_path, n=3):
    rows = [
        {
            "id": f"u{i}",
            "path": f"audio/u{i}.flac",
            "duration": 1.5 + i,
            "text": f"word {i}",
            "sample_rate": 16000,
        }
        for i in range(n)
    ]
    rows[0]["segments"] = [{"id": "s0", "start": 0.0, "end": 1.0, "text": "word"}]
    rows[0]["entities"] = ["Word"]
    return write_jsonl(tmp_path / "set" / "manifest.jsonl", rows)


def test_load_dataset_resolves_paths_against_the_manifest(tmp_path):
    items = load_dataset(_dataset(tmp_path))
    assert [i.id for i in items] == ["u0", "u1", "u2"]
    assert items[1].audio == (tmp_path / "set" / "audio" / "u1.flac").resolve()
    assert items[0].segments[0]["end"] == 1.0 and items[0].entities == ("Word",) and items[1].entities is None
    assert len(load_dataset(tmp_path / "set" / "manifest.jsonl", limit=2)) == 2


def test_load_dataset_errors(tmp_path):
    with pytest.raises(UniqueASRError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "path": "a.wav"}])
    with pytest.raises(UniqueASRError, match="lacks"):
        load_dataset(bad)
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "path": "a", "duration": 1, "text": ""}] * 2)
    with pytest.raises(UniqueASRError, match="duplicate"):
        load_dataset(dup)


def test_resume_skips_done_ids_and_repairs_a_torn_line(tmp_path):
    items = load_dataset(_dataset(tmp_path))
    out = tmp_path / "out" / "r.jsonl"
    assert completed(out, RUN) == set()
    with ManifestWriter(out) as w:
        w.append({**RUN, "id": "u0"})
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"model": "tiny.en", "id": "u1", "hypo')  # crash mid-line
    assert completed(out, RUN) == {"u0"}
    assert [i.id for i in pending(items, completed(out, RUN))] == ["u1", "u2"]
    with ManifestWriter(out) as w:  # cuts the torn line before appending
        w.append({**RUN, "id": "u1"})
    assert [r["id"] for r in read_jsonl(out)] == ["u0", "u1"]
    with ManifestWriter(out) as w:  # values JSON cannot hold (e.g. a dtype in attention info) become text
        w.append({**RUN, "id": "u2", "attention": {"dtype": complex(1, 2)}})
    assert list(read_jsonl(out))[-1]["attention"] == {"dtype": "(1+2j)"}
    assert pending(items, completed(out, RUN)) == []


def test_resume_refuses_results_of_another_configuration(tmp_path):
    out = tmp_path / "r.jsonl"
    with ManifestWriter(out) as w:
        w.append({**RUN, "id": "u0"})
    other = {**RUN, "sparsity": {"mode": "unique", "budget": 512}}
    with pytest.raises(UniqueASRError, match="differs in sparsity"):
        completed(out, other)


def test_malformed_line_in_the_middle_raises(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": 1}\nnot json\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(UniqueASRError, match="r.jsonl:2"):
        list(read_jsonl(out, skip_bad_last_line=True))


def test_make_record_from_result_types(tmp_path):
    item = load_dataset(_dataset(tmp_path))[0]
    segs = [Segment(0, 0.0, 0.8, " Word"), Segment(1, 0.8, 1.2, "  "), Segment(2, 1.2, 1.4, " again.")]
    info = TranscriptionInfo(
        "en", 0.99, 1.5, "tiny.en", speech_s=1.2, decoded_s=1.2, attention={"backend": "x"}
    )
    rec = make_record(item, segs, info, 0.25, RUN)
    assert rec["hypothesis"] == "Word again."
    assert rec["reference"] == "word 0" and rec["duration"] == 1.5 and rec["wall_s"] == 0.25
    assert rec["speech_s"] == 1.2 and rec["decoded_s"] == 1.2 and rec["attention"] == {"backend": "x"}
    assert rec["segments"][0] == {"start": 0.0, "end": 0.8, "text": "Word"}
    assert rec["reference_segments"] == [{"start": 0.0, "end": 1.0}] and rec["entities"] == ["Word"]
    assert {k: rec[k] for k in RUN} == RUN
    json.dumps(rec)  # serialisable
