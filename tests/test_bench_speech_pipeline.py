"""scripts/bench_speech_pipeline.py on CPU with a tiny random Voxtral: the `-stages` arm splits the wall time by
stage and restores the decoder's methods afterwards."""

from __future__ import annotations

import json

from script_loader import load_script


def test_stages_arm_splits_the_wall_time(tmp_path):
    bench = load_script("bench_speech_pipeline")
    from unique_asr.stream_decoding import RowDecoder

    before = {method: getattr(RowDecoder, method) for _, method in bench.STAGES}
    out = tmp_path / "pipe.json"
    from unique_asr.models import llm

    default = llm.PREFILL_KEY_BUCKET
    try:
        assert bench.main(["--device", "cpu", "--tiny", "--recordings", "2", "--minutes", "1",
                           "--arms", "unique-stages", "--prefill-key-bucket", "64", "--out", str(out)]) == 0
    finally:
        llm.PREFILL_KEY_BUCKET = default
    header, rec = json.loads(out.read_text())[:2]
    assert header["prefill_key_bucket"] == 64
    assert rec["arm"] == "unique-stages" and rec["tokens"] > 0 and not rec["errors"]
    stages = rec["stages_s"]
    assert set(stages) == {name for name, _ in bench.STAGES} | {"host, rest"}
    assert all(v >= 0 for v in stages.values()) and stages["decode steps"] > 0
    assert abs(sum(stages.values()) - rec["wall_s"]) < 1e-6
    assert {method: getattr(RowDecoder, method) for _, method in bench.STAGES} == before
    spread = rec["step_calls"]
    assert spread["count"] > 0 and spread["median_ms"] > 0 and 0 <= spread["slow_count"] <= spread["count"]
    assert rec["replay_device"] is None  # no CUDA graphs on CPU (on CUDA: the device time of each replay)


def test_step_spread_separates_the_slow_steps():
    bench = load_script("bench_speech_pipeline")
    spread = bench.step_spread([0.004] * 9 + [0.5])
    assert spread["count"] == 10 and abs(spread["median_ms"] - 4.0) < 1e-9
    assert spread["slow_count"] == 1 and abs(spread["slow_s"] - 0.5) < 1e-12


def test_ragged_ends_windows_at_seeded_lengths(tmp_path):
    """`--ragged` ends each window after a length drawn per (recording, window) in [max/4, max]: fewer tokens than
    the plain run (where every window of the random checkpoint runs to max), the same in two runs, and the decoder's
    `_ends` restored afterwards; it refuses the transformers arm."""
    bench = load_script("bench_speech_pipeline")
    from unique_asr.stream_decoding import RowDecoder

    ends = RowDecoder._ends
    runs = []
    for ragged in ([], ["--ragged"], ["--ragged"]):
        out = tmp_path / f"pipe{len(runs)}.json"
        assert bench.main(["--device", "cpu", "--tiny", "--recordings", "2", "--minutes", "1", "--arms", "unique",
                           "--max-new-tokens", "16", *ragged, "--out", str(out)]) == 0
        header, rec = json.loads(out.read_text())[:2]
        assert header["ragged"] == bool(ragged) and not rec["errors"]
        runs.append(rec)
    plain, first, second = (r["tokens"] for r in runs)
    assert plain == runs[0]["windows"] * 16
    assert runs[1]["windows"] * 4 <= first < plain and first == second
    assert RowDecoder._ends is ends
    assert bench.main(["--device", "cpu", "--tiny", "--arms", "transformers", "--ragged"]) == 2
