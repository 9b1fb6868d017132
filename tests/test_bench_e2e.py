"""scripts/bench_e2e.py: every subcommand runs end to end on CPU at tiny shapes and writes valid JSON records
(arms, medians, speedups, kernel counts that show whether the sparse path ran); the captured LLM step (GPU)
decodes the same tokens as the eager step."""

from __future__ import annotations

import json
import math

import pytest
import soundfile as sf
import speech_data
import torch
from script_loader import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_e2e")


def run(bench, tmp_path, *argv) -> list[dict]:
    out = tmp_path / "records.json"
    assert bench.main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert records[0]["arm"] == "run" and records[0]["device"] == "cpu"
    assert "out" not in records[0]["options"]  # where the file went is no run option (nor a machine path)
    return records[1:]


def timed(records: list[dict]) -> list[dict]:
    recs = [r for r in records if "median_ms" in r]
    assert recs and all(math.isfinite(r["median_ms"]) and r["median_ms"] > 0 for r in recs)
    return recs


def test_llm_decode_records_arms_speedups_and_sparse_kernel_counts(bench, tmp_path, capsys):
    recs = timed(run(bench, tmp_path, "llm-decode", "--tiny", "--batch", "2", "--contexts", "48", "--budget", "16",
                     "--rounds", "2", "--steps", "2", "--profile", "--profile-steps", "1"))
    by = {r["arm"]: r for r in recs}
    assert set(by) == {"dense", "unique", "quest"}
    assert by["dense"]["speedup_vs_dense"] == 1.0 and by["unique"]["anchor_speedup"] is None  # 48 is no anchor
    for r in recs:
        assert r["B"] == 2 and r["N"] == 48 and r["context_end"] > 48 and r["graphs"] is False
        assert r["tokens_per_s"] == pytest.approx(2 / (r["median_ms"] * 1e-3))
    assert by["dense"]["kernels"]["sparse_select_per_call"] == 0  # dense never selects pages
    assert by["unique"]["kernels"]["sparse_select_per_call"] > 0 and by["quest"]["kernels"]["sparse_select_per_call"] > 0
    capsys.readouterr()
    assert bench.main(["report", str(tmp_path / "records.json")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 | 48 |")]
    assert [row.split(" | ")[2] for row in rows] == ["dense", "unique", "quest"]


def test_llm_decode_with_int8_means_re_ranked(bench, tmp_path):
    """--stats-dtype int8 --refine 4: the scored arms re-rank (the cache keeps the KV-dtype means beside the
    codes), the window and dense arms take no refine; every arm decodes."""
    recs = timed(run(bench, tmp_path, "llm-decode", "--tiny", "--batch", "2", "--contexts", "48", "--budget", "16",
                     "--rounds", "1", "--steps", "2", "--arms", "dense", "unique", "window", "--stats-dtype", "int8",
                     "--refine", "4"))
    assert {r["arm"]: (r["stats_dtype"], r["refine"]) for r in recs} == {
        "dense": ("int8", 0), "unique": ("int8", 4), "window": ("int8", 0)}


def test_speech_llm_context_from_audio_minutes_and_7b_memory_bound(bench, tmp_path):
    records = run(bench, tmp_path, "speech-llm", "--tiny", "--batch", "1", "--minutes", "0.04", "--budget", "16",
                  "--rounds", "1", "--steps", "2")
    recs = timed(records)
    assert {r["arm"] for r in recs} == {"dense", "unique"}
    assert all(r["N"] == round(0.04 * 60 * 25) and r["minutes"] == 0.04 for r in recs)  # Qwen2-Audio: 25 tok/s
    config, tok_per_s = bench.speech_llm_config(tiny=False)
    llm = config.llm
    assert tok_per_s == 25.0 and llm.num_kv_heads == llm.num_heads == 32 and llm.vocab_size == 156032
    # 60 min at batch 16 holds 90000 tokens a row: far beyond one 139 GB card in bf16 (MHA, 32 layers)
    assert bench.cache_gib(llm, 16, 90000, 8, ("unique",)) > 600 > bench.cache_gib(llm, 1, 90000, 8, ("unique",))


def test_whisper_step_records_eager_arms_with_speedups(bench, tmp_path):
    recs = timed(run(bench, tmp_path, "whisper-step", "--shapes", "tiny-random", "--batch", "2", "--arms", "dense",
                     "unique:32", "--page-size", "8", "--prefix", "4", "--steps", "2", "--rounds", "1", "--profile"))
    by = {r["arm"]: r for r in recs}
    assert set(by) == {"dense/eager", "unique:32/eager"} and not any(r["graphs"] for r in recs)
    assert by["unique:32/eager"]["budget"] == 32 and by["dense/eager"]["speedup_vs_dense"] == 1.0
    assert all(r["tokens_per_s"] == pytest.approx(2e3 / r["median_ms"]) for r in recs)
    assert by["dense/eager"]["kernels"]["sparse_select_per_call"] == 0
    busy = by["unique:32/eager"]["kernels"]
    assert busy["busy_us_per_call"] > 0 and 0 < sum(busy["time_us_per_call"].values()) <= busy["busy_us_per_call"]
    assert by["unique:32/eager"]["kernels"]["sparse_select_per_call"] > 0


def test_whisper_longform_ours_and_transformers_on_the_same_windows(bench, tmp_path):
    text = speech_data.text("austen_0930")  # a recorded 3.3 s utterance
    wav = tmp_path / "say.wav"
    audio, rate = speech_data.clip("austen_0930"), speech_data.SAMPLE_RATE
    sf.write(wav, audio, rate)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(dict(id="say", path="say.wav", duration=len(audio) / rate, text=text)) + "\n")
    recs = timed(run(bench, tmp_path, "whisper-longform", "--model", "tiny.en", "--manifest", str(manifest),
                     "--arms", "dense", "--rounds", "1", "--max-new-tokens", "32", "--profile"))
    by = {r["arm"]: r for r in recs}
    assert set(by) == {"dense", "transformers"}
    for r in recs:
        assert r["rtfx"] == pytest.approx(r["duration_s"] / r["median_s"])
        assert r["wer"] <= 0.2  # both read the clip: same weights, same windows
        stages = r["stages"]  # --profile: where one more transcription's time went
        assert stages["windows_calls"] == 1 and stages["decode_calls"] == 1  # calls that returned: one window
        assert 3 <= stages["decode_steps"] <= 33 and stages["decode_ms_per_step"] > 0
        parts = stages["windows_s"] + stages["decode_s"] + stages.get("encode_s", 0.0)
        assert 0 < parts <= stages["total_s"] and stages["other_s"] >= 0
    assert by["dense"]["stages"]["encode_calls"] == 1 and "encode_s" not in by["transformers"]["stages"]
    assert by["transformers"]["speedup_vs_transformers"] == 1.0 and "speedup_vs_transformers" in by["dense"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_llm_steps_decode_the_eager_tokens(bench):
    from unique_asr.cache import PagedKVCache
    from unique_asr.config import SparsityConfig
    from unique_asr.models.llm import LLM

    device, c = torch.device("cuda"), bench.TINY_LLM
    llm = bench.random_module(lambda: LLM(c), torch.bfloat16, device)
    tokens = []
    for graphs in (False, True):
        torch.manual_seed(0)
        cache = PagedKVCache(num_layers=c.num_layers, num_pages=64, page_size=8, num_kv_heads=c.num_kv_heads,
                             head_dim=c.head_dim, max_batch=2, max_pages_per_seq=32, dtype=torch.bfloat16,
                             device=device)
        bench.fill_random(cache, 2, 100, torch.bfloat16)
        tok = torch.tensor([3, 5], device=device)
        decoder = bench.GreedyDecoder(llm, cache, SparsityConfig(mode="unique", budget=32), tok,
                                      torch.full((2,), 100, device=device))
        seen = []
        if graphs:
            decoder.capture()  # runs two steps
        else:
            for _ in range(2):
                decoder.run(1)
        for _ in range(12):  # crosses page boundaries: new pages, both parities
            seen.append(tok.clone())
            decoder.run(1)
        tokens.append(torch.stack(seen))
    assert torch.equal(tokens[0], tokens[1])


def test_a_failing_shape_is_recorded_and_the_sweep_goes_on(bench, tmp_path):
    records = run(bench, tmp_path, "llm-decode", "--tiny", "--batch", "1", "--contexts", "16", "32", "--arms", "unique",
                  "--page-size", "8", "--budget", "4", "--rounds", "1", "--steps", "1")
    assert [(r["arm"], r["N"]) for r in records] == [("error", 16), ("error", 32)]  # budget below one page
    assert all("budget" in r["error"] for r in records)


def test_records_name_the_source_that_ran(tmp_path, monkeypatch):
    """The run header's code carries a digest of unique_asr/ and kernels/ that follows their content (a copied
    working tree may have stale git metadata)."""
    bench_kernels = load_script("bench_kernels")
    version = bench_kernels.code_version()
    git, _, digest = version.partition(" src ")
    assert git and len(digest) == 12 and int(digest, 16) >= 0 and digest == bench_kernels.source_digest()
    fake = tmp_path / "repo"
    (fake / "scripts").mkdir(parents=True)
    (fake / "unique_asr").mkdir()
    (fake / "kernels").mkdir()
    (fake / "unique_asr" / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(bench_kernels, "__file__", str(fake / "scripts" / "bench_kernels.py"))
    before = bench_kernels.source_digest()
    (fake / "unique_asr" / "a.py").write_text("x = 2\n")
    assert bench_kernels.source_digest() != before


def test_step_profile_counts_every_selection_kernel_as_page_selection(bench):
    """The re-ranking and window launches are page selection in the per-kernel profile, not "other" (a
    Voxtral-shape window arm had shown its selection as 1012 us of "other")."""
    profile = {"time_us_per_call": {"_select_kernel": 20.0, "_refine_kernel": 10.0, "_window_kernel": 5.0,
                                    "_decode_kernel": 7.0, "nvjet_sm90_tst": 30.0},
               "busy_us_per_call": 73.0}
    kinds = bench.step_kinds(profile, {"page selection": 35_000_000})
    assert kinds["page selection"]["us"] == 35.0 and kinds["other"]["us"] == 1.0
    assert kinds["attention"]["us"] == 7.0 and kinds["GEMM"]["us"] == 30.0


def test_step_bytes_count_one_byte_means_with_their_scale(bench):
    """Page selection's floor reads what the cache keeps: pool-dtype means + fp32 std, or one-byte codes + fp32
    scale + fp32 std (an int8 Voxtral run had reported its selection against the bf16 bytes)."""
    from unique_asr.models.llm import LLM

    c = bench.TINY_LLM  # head_dim 16, 2 KV heads, 2 layers
    llm = LLM(c).to(torch.bfloat16)
    pages = 4 * 2 * 2 * (64 // 8)  # batch x layers x KV heads x pages
    pool = bench.step_bytes(llm, 4, 64, "unique", 8, 32)
    assert pool["page selection"] == pages * (16 * 2 + 4)
    for code in ("int8", "fp8"):
        assert bench.step_bytes(llm, 4, 64, "unique", 8, 32, code)["page selection"] == pages * (16 + 4 + 4)
    assert bench.step_bytes(llm, 4, 64, "quest", 8, 32, "int8")["page selection"] == pages * 2 * 16 * 2
    assert bench.step_bytes(llm, 4, 64, "window", 8, 32)["page selection"] == 0
