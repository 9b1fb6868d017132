import json
import math

import pytest

from unique_asr.errors import UniqueASRError
from unique_asr.eval.entities import entity_hits, load_entities
from unique_asr.eval.metrics import pool, score_manifest, score_record
from unique_asr.eval.normalise import get_normaliser, normalise, words
from unique_asr.eval.telemetry import overlap_seconds, telemetry, total_seconds, union_intervals


def _record(ref, hyp, **extra):
    return {"id": extra.pop("id", "f"), "reference": ref, "hypothesis": hyp, "duration": 10.0, **extra}


def test_hand_computed_wer_and_cer():
    s = score_record(_record("a b c d", "a x c d e"))
    assert (s.words.substitutions, s.words.deletions, s.words.insertions) == (1, 0, 1)
    assert s.wer == 0.5
    # characters of "a b c d" (7) vs "a x c d e" (9): b->x, then insert " e"
    assert (s.chars.substitutions, s.chars.deletions, s.chars.insertions) == (1, 0, 2)
    assert s.cer == pytest.approx(3 / 7)


def test_one_normaliser_for_both_sides():
    s = score_record(_record("MISTER HALE'S TWENTY DOLLARS", "Mr. Hale's $20."))
    assert s.wer == 0.0
    assert normalise("Hello,   World!") == "hello world"
    assert words("Colour, isn't it?") == ["color", "is", "not", "it"]
    basic = score_record(_record("Grüße, Welt!", "grüße welt"), normaliser="whisper_basic")
    assert basic.wer == 0.0
    with pytest.raises(ValueError):
        get_normaliser("nope")


def test_entity_recall_counts_verbatim_mentions():
    norm = get_normaliser("whisper_english")
    hyp = normalise("We met Jane Doe at Acme Corp. Jane Doe said hi.")
    assert entity_hits(["Jane Doe", "Jane Doe", "Acme Corp", "Globex"], hyp, norm) == (3, 4)
    assert entity_hits(["Jane Doe"] * 3, hyp, norm) == (2, 3)  # credit at most the occurrences
    assert entity_hits(["Doe Jane"], hyp, norm) == (0, 1)  # verbatim: order matters
    assert entity_hits(["Jan"], hyp, norm) == (0, 1)  # whole words only
    assert entity_hits(["!!"], hyp, norm) == (0, 0)
    s = score_record(_record("jane doe met acme", "jane doe met acne", entities=["Jane Doe", "Acme"]))
    assert (s.entities_found, s.entities_total) == (1, 2)


def test_load_entities(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"id": "a", "entities": ["X Y"]}\n\n{"id": "a", "entities": ["Z"]}\n', encoding="utf-8")
    assert load_entities(path) == {"a": ["X Y", "Z"]}
    path.write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(UniqueASRError, match="e.jsonl:1"):
        load_entities(path)


def test_loop_flags_against_the_reference():
    ref = ["thank", "you", "very", "much", "for", "coming", "today"]
    loop = ref + ["and", "then", "and", "then", "and", "then", "and", "then", "and", "then", "and", "then"]
    t = telemetry(ref, loop, n=2, min_repeats=4, max_length_ratio=10)
    assert t.max_ngram_excess == 6 and t.loop  # "and then" 6 times, 0 in the reference
    # the speaker really repeats a phrase: no loop
    ref2 = ("thank you very much " * 5).split()
    t2 = telemetry(ref2, ref2, n=5, min_repeats=4)
    assert t2.repeated_ngrams == t2.ref_repeated_ngrams > 0 and t2.max_ngram_excess == 0 and not t2.loop
    long = telemetry(["a", "b"], ["a", "b", "c", "d"], min_repeats=99, max_length_ratio=1.5)
    assert long.length_ratio == 2.0 and long.loop
    assert telemetry([], []).length_ratio == 1.0 and not telemetry([], []).loop
    assert telemetry([], ["x"]).loop


def test_interval_coverage():
    assert union_intervals([(3, 4), (0, 1), (0.5, 2), (5, 5)]) == [(0, 2), (3, 4)]
    assert total_seconds([(0, 2), (1, 3)]) == 3
    assert overlap_seconds([(0, 1), (2, 5)], [(0.5, 3), (4, 10)]) == pytest.approx(0.5 + 1 + 1)
    s = score_record(
        _record(
            "a b",
            "a b",
            segments=[{"start": 0, "end": 4, "text": "a b"}],
            reference_segments=[{"start": 1, "end": 3}, {"start": 5, "end": 7}],
        )
    )
    assert s.speech_s == 4 and s.covered_s == 2 and s.coverage == 0.5
    whole = score_record(_record("a", "a", segments=[{"start": 0, "end": 5, "text": "a"}]))
    assert whole.coverage == 0.5  # no reference segments: the whole duration counts as speech


def test_pool_is_count_weighted():
    a = score_record(_record("a b c d", "a b c d", wall_s=2.0, speech_s=8.0, decoded_s=8.0))
    b = score_record(_record("x y", "", wall_s=3.0, speech_s=4.0, decoded_s=1.0))
    c = pool([a, b])
    assert c.decoded_share == pytest.approx(9 / 12)
    assert c.wer == pytest.approx(2 / 6)  # not the mean of per-file WERs (0 and 1)
    assert c.rtfx == pytest.approx(20 / 5)
    assert c.words.deletions == 2 and c.insertion_rate == 0
    assert math.isnan(c.entity_error_rate)
    assert c.confusions.deletions == {"x": 1, "y": 1}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_score_manifest_uses_recorded_normaliser(tmp_path):
    rows = [
        _record("Hello World", "hello, world!", id="a", normaliser="whisper_basic", wall_s=1.0),
        _record("One two", "one", id="b", normaliser="whisper_basic", wall_s=1.0),
    ]
    m = score_manifest(_write(tmp_path / "r.jsonl", rows))
    assert m.normaliser == "whisper_basic" and m.corpus.files == 2
    assert m.corpus.wer == pytest.approx(1 / 4)
    ent = score_manifest(tmp_path / "r.jsonl", entities={"a": ["world", "moon"]})
    assert ent.corpus.entity_error_rate == 0.5
    rows[1]["normaliser"] = "whisper_english"
    with pytest.raises(UniqueASRError, match="different normalisers"):
        score_manifest(_write(tmp_path / "r.jsonl", rows))
    assert score_manifest(tmp_path / "r.jsonl", normaliser="whisper_english").normaliser == "whisper_english"
    with pytest.raises(UniqueASRError, match="no results"):
        score_manifest(_write(tmp_path / "empty.jsonl", []))
