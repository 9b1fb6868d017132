"""scripts/score_wer.py --html: the word diff follows the WER's alignment, the viewer carries segment and word
times and the audio, and the page needs nothing from outside."""

from __future__ import annotations

import json
import re

import soundfile as sf
import speech_data
from script_loader import load_script

from unique_asr.eval.html_report import word_diff


def test_word_diff_reads_in_order_and_counts_like_the_wer():
    ref = "the cat sat on the mat today".split()
    hyp = "the cat sat in the mat on today friends".split()
    diff = word_diff(ref, hyp)
    kinds = [k for k, _, _ in diff]
    assert kinds.count("sub") == 1 and kinds.count("ins") == 2 and kinds.count("del") == 0
    assert [r for _, r, _ in diff if r is not None] == ref  # every reference word once, in order
    assert [h for _, _, h in diff if h is not None] == hyp
    assert word_diff(["a", "b"], []) == [("del", "a", None), ("del", "b", None)]


def test_html_report_from_a_result_manifest(tmp_path):
    audio = tmp_path / "audio" / "u.flac"
    audio.parent.mkdir()
    sf.write(audio, speech_data.clip("austen_0930"), 16000)
    words = speech_data.manifest()["austen_0930"]["words"]
    record = {
        "id": "u", "audio": str(audio), "normaliser": "whisper_english", "duration": 3.3,
        "reference": "he might even have been made amiable himself",
        "hypothesis": "He might have been made amicable himself, sir.",
        "segments": [{"start": 0.1, "end": 3.2, "text": "He might have been made amicable himself, sir.",
                      "words": [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in words]}],
    }
    manifest = tmp_path / "run.jsonl"
    manifest.write_text(json.dumps(record) + "\n")
    out = tmp_path / "report" / "transcripts.html"
    assert load_script("score_wer").main([str(manifest), "--report-dir", str(tmp_path / "report"),
                                           "--html", str(out)]) == 0
    page = out.read_text()
    assert page.count('class="sub"') == 1 and page.count('class="del"') == 1 and page.count('class="ins"') == 1
    assert "<s>amiable</s>&rarr;<b>amicable</b>" in page and "WER 37.50 %" in page  # 3 errors / 8 words
    assert len(re.findall(r"data-s=\"[\d.]+\" data-e=\"[\d.]+\"", page)) == len(words)  # one per timed word
    assert 'src="../audio/u.flac"' in page  # relative to the report, so the folder can move together
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # self-contained: nothing fetched from outside
    embedded = tmp_path / "embedded.html"
    assert load_script("score_wer").main([str(manifest), "--report-dir", str(tmp_path / "report"),
                                           "--html", str(embedded), "--embed-audio-mb", "1"]) == 0
    assert 'src="data:audio/flac;base64,' in embedded.read_text()
