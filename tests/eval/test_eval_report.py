import json

from unique_asr.eval.manifest import write_jsonl


def _run(mode, budget):
    return {
        "model": "tiny.en",
        "dataset": "toy",
        "normaliser": "whisper_english",
        "transcribe": {},
        "decode": {"beam_size": 1},
        "sparsity": {"mode": mode, "page_size": 16, "budget": budget},
    }


def _manifest(path, mode, budget, hyp, wall):
    rows = [
        {
            **_run(mode, budget),
            "id": "a",
            "reference": "alpha beta gamma delta",
            "hypothesis": hyp,
            "duration": 8.0,
            "wall_s": wall,
            "segments": [{"start": 0.0, "end": 8.0, "text": hyp}],
            "reference_segments": [],
            "entities": ["Gamma"],
        }
    ]
    return write_jsonl(path, rows)


def test_score_script_writes_report_plots_and_scores(tmp_path, scripts, capsys):
    paths = [
        _manifest(tmp_path / "dense.jsonl", "dense", 384, "alpha beta gamma delta", 4.0),
        _manifest(tmp_path / "u128.jsonl", "unique", 128, "alpha beta gama delta zeta zeta", 1.0),
        _manifest(tmp_path / "u256.jsonl", "unique", 256, "alpha beta gamma delt", 2.0),
    ]
    report_dir = tmp_path / "report"
    assert scripts("score_wer").main([*map(str, paths), "--report-dir", str(report_dir)]) == 0
    out = capsys.readouterr().out
    assert "toy / tiny.en / unique S=16 T=128: WER 75.00 % (S 1 D 0 I 2 of 4)" in out
    scores = {r["run"]["sparsity"]["budget"]: r for r in json.loads((report_dir / "scores.json").read_text())}
    assert (
        scores[128]["wer"] == 0.75 and scores[128]["entity_error_rate"] == 1.0 and scores[128]["rtfx"] == 8.0
    )
    assert scores[256]["wer"] == 0.25 and scores[256]["entity_error_rate"] == 0.0
    assert scores[384]["wer"] == 0.0 and scores[384]["coverage"] == 1.0
    for png in ("wer_vs_budget.png", "rtfx_vs_budget.png"):
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "whisper_english" in report and "![WER vs budget](wer_vs_budget.png)" in report
    assert "| toy / tiny.en / unique S=16 T=128 | 1 | 0.00 | 75.00 |" in report
    assert "gamma→gama (1)" in report


def test_score_script_reports_errors_in_one_line(tmp_path, scripts, capsys):
    missing = tmp_path / "missing.jsonl"
    assert scripts("score_wer").main([str(missing), "--report-dir", str(tmp_path / "r")]) == 1
    assert "score_wer: error:" in capsys.readouterr().err
