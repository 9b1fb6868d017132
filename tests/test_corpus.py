"""Corpus job in one process: planning (ids, manifests, durations, longest-first shards), the result manifest,
restart skipping committed files, bad files recorded, a changed setup refused. Real speech, tiny.en."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from speech_data import clip
from unique_asr.corpus.cli import main
from unique_asr.corpus.plan import CorpusItem, assign, items_from_inputs, items_from_manifest, longest_first
from unique_asr.corpus.progress import Progress
from unique_asr.errors import UniqueASRError

RATE = 16000


def test_assign_is_longest_processing_time_and_deterministic():
    items = [CorpusItem(f"f{i}", f"f{i}.wav", d) for i, d in enumerate([5, 100, 7, 60, 60, 3, 40, 1, 30])]
    shards = assign(items, 3)
    assert shards == assign(list(reversed(items)), 3)  # a pure function of the set of items
    assert sorted(i.id for s in shards for i in s) == sorted(i.id for i in items)  # each item exactly once
    loads = [sum(i.duration for i in s) for s in shards]
    assert loads == [103, 101, 102]  # 100 3 | 60 40 1 | 60 30 7 5: each item to the least loaded shard
    for shard in shards:
        assert [i.duration for i in shard] == sorted((i.duration for i in shard), reverse=True)
    assert [i.id for i in longest_first(items)][:3] == ["f1", "f3", "f4"]  # ties by id
    with pytest.raises(ValueError):
        assign(items, 0)


def test_folder_ids_keep_subfolders_and_missing_inputs_become_failures(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        sf.write(tmp_path / sub / "x.flac", clip("goforward"), RATE)
    items = items_from_inputs([str(tmp_path), str(tmp_path / "a" / "x.flac"), str(tmp_path / "nope.wav")])
    assert [i.id for i in items] == ["a/x", "b/x", "nope"]  # a/x.flac named twice is transcribed once
    assert items[2].error and "no such file" in items[2].error


def test_manifest_lines_in_prepare_data_format(tmp_path):
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "one.flac", clip("goforward"), RATE)
    rows = [{"id": "rec-1", "path": "audio/one.flac", "duration": 2.786, "text": "go forward ten meters"},
            {"audio": "audio/one.flac"},
            {"id": "../escape", "path": "audio/one.flac"}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = items_from_manifest(manifest)
    assert [(i.id, i.duration) for i in items[:2]] == [("rec-1", 2.786), ("audio/one", None)]
    assert items[0].source == str(tmp_path / "audio" / "one.flac")
    assert items[2].error and "cannot name an output file" in items[2].error
    manifest.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(UniqueASRError, match="duplicate id"):
        items_from_manifest(manifest)


def test_progress_line_shows_hours_files_throughput_and_failures(capsys):
    progress = Progress(7200.0, 10, done_s=1800.0, done_files=2, failed=1, interval=0)
    progress.advance(1800.0)
    progress.file_done(ok=False)
    progress.close()
    line = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "1.00/2.00 h audio, 3/10 files" in line and "x realtime, 2 failed" in line, line


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    sf.write(root / "one.flac", clip("austen_0880"), RATE)
    sf.write(root / "two.wav", clip("goforward"), RATE)
    (root / "empty.wav").write_bytes(b"")
    return root


def _results(out):
    return {row["id"]: row for row in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_local_job_accounts_for_every_file_and_restart_redoes_nothing(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(corpus), "--model", "tiny.en", "--output_dir", str(out), "--output_format", "txt,json", "--quiet"]
    assert main(args) == 1  # one bad file
    err = capsys.readouterr().err
    assert "failed: empty:" in err and "empty file (0 bytes)" in err and "Traceback" not in err
    rows = _results(out)
    assert sorted(rows) == ["empty", "one", "two"]
    assert rows["empty"]["status"] == "failed"
    for rid, words in (("one", "young man"), ("two", "forward")):
        row = rows[rid]
        assert row["status"] == "ok" and row["attempt"] == 1 and row["rtfx"] > 0
        assert row["duration_s"] == pytest.approx(sf.info(row["source"]).duration)
        assert words in (out / f"{rid}.txt").read_text().lower()
        assert row["outputs"] == [f"{rid}.txt", f"{rid}.json"]
    assert not list(out.glob(".*journal*"))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}

    assert main(args) == 1  # run again: every file is committed, nothing is transcribed again
    assert _results(out) == rows
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name != "results.jsonl"} == \
        {k: v for k, v in stamps.items() if k != "results.jsonl"}


def test_changed_setup_in_the_same_folder_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    base = [str(corpus / "two.wav"), "--model", "tiny.en", "--output_dir", str(out), "--output_format", "txt", "--quiet"]
    assert main(base) == 0
    assert main(base + ["--beam_size", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another options" in err[0] and "Traceback" not in err[0]
    assert main(base + ["--batch_size", "2"]) == 0  # speed-only options may change on a restart


def test_usage_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["--output_dir", str(tmp_path)]) == 2
    assert main([str(tmp_path), "--output_dir", str(tmp_path), "--max_attempts", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("unique-corpus: error:") for line in err)


@pytest.mark.parametrize("attention", ["unique", "dense"])
def test_speech_llm_corpus_job_equals_the_cli(attention, tmp_path, capsys):
    """The corpus job runs whatever family load_model returns, in every attention mode: a tiny Voxtral
    checkpoint (random weights, save_pretrained) gives the CLI's transcripts for every file."""
    from speech_checkpoints import voxtral

    from unique_asr.cli import main as transcribe_main

    folder = tmp_path / "voxtral"
    voxtral(folder, seed=3)
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("austen_0870", "goforward"):
        sf.write(audio / f"{name}.flac", clip(name), RATE)
    common = ["--model", str(folder), "--attention", attention, "--page_size", "4", "--budget", "16",
              "--max_new_tokens", "6", "--device", "cpu", "--output_format", "json", "--quiet"]
    assert transcribe_main([str(audio), *common, "--output_dir", str(tmp_path / "cli")]) == 0
    assert main([str(audio), *common, "--output_dir", str(tmp_path / "job")]) == 0, capsys.readouterr().err
    rows = _results(tmp_path / "job")
    assert sorted(rows) == ["austen_0870", "goforward"] and all(r["status"] == "ok" for r in rows.values())
    said = 0
    for name in rows:
        cli = json.loads((tmp_path / "cli" / f"{name}.json").read_text())
        job = json.loads((tmp_path / "job" / f"{name}.json").read_text())
        assert [(s["start"], s["end"], s["text"]) for s in job["segments"]] == \
            [(s["start"], s["end"], s["text"]) for s in cli["segments"]]
        said += sum(bool(s["text"].strip()) for s in job["segments"])
    assert said  # the random model says something (seed 3), so the comparison is not of two empty lists
