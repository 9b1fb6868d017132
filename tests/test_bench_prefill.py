"""scripts/bench_prefill.py on CPU: every arm runs and equals its reference (the masked row; the rows prefilled one by one)."""

from __future__ import annotations

import json

from script_loader import load_script


def test_prefill_arms_agree(tmp_path):
    bench = load_script("bench_prefill")
    out = tmp_path / "prefill.json"
    assert bench.main(["--device", "cpu", "--contexts", "8", "64", "--chunk", "16", "--rounds", "1", "--heads", "8",
                       "--kv-heads", "2", "--head-dim", "16", "--rows", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["N"] for r in rows] == [64]  # N shorter than the chunk is skipped
    for arm in ("masked", "bias", "flash", "rows_one_by_one", "rows_batched"):
        assert isinstance(rows[0][f"{arm}_ms"], float) and rows[0][f"{arm}_max_err"] < 1e-5, (arm, rows[0])
    assert rows[0]["calls_batched"] == 1  # three rows of equal length: one attention call


def test_growing_mode_arms_agree(tmp_path):
    """--growing: every arm runs its calls over growing key lengths and equals the exact call (bucketed keys
    masked past the row's own)."""
    bench = load_script("bench_prefill")
    out = tmp_path / "growing.json"
    assert bench.main(["--device", "cpu", "--growing", "40", "3", "--chunk", "16", "--heads", "4", "--kv-heads", "2",
                       "--head-dim", "16", "--rows", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["growing"]
    assert [r["arm"] for r in rows] == ["exact", "bucket_1024", "bucket_1800", "efficient_exact"]
    for r in rows[:3]:
        assert r["calls"] == 3 and r["median_ms"] > 0 and r["max_err"] < 1e-5, r
    assert "error" in rows[3] or rows[3]["max_err"] < 1e-5  # no memory-efficient kernel on a CPU


def test_profile_prefill_runs_on_a_tiny_model(capsys):
    """scripts/profile_prefill.py (the whole batched prefill under torch.profiler) on a tiny model, CPU."""
    profile = load_script("profile_prefill")
    assert profile.main(["--tiny", "--device", "cpu", "--rows", "2", "--chunk", "8", "--context", "24", "--top", "3"]) == 0
    assert "prefill 2 x 8 over 32 held: wall" in capsys.readouterr().out
