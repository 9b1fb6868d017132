"""scripts/plot_results.py draws the documented pictures from the committed records."""

from __future__ import annotations

from script_loader import load_script


def test_pictures_are_drawn_from_the_committed_records(tmp_path):
    assert load_script("plot_results").main(["--out-dir", str(tmp_path)]) == 0
    for name in ("wer_vs_budget", "kernel_speedup_vs_context", "captured_mass_vs_budget"):
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name
