"""scripts/profile_select.py's summary of Nsight Compute CSV files (no GPU: files written here in ncu's formats)."""

from __future__ import annotations

from script_loader import load_script

ps = load_script("profile_select")

WIDE = '''==PROF== Connected to process 1
"ID","Kernel Name","gpu__time_duration.sum","launch__registers_per_thread","smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio","smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio","smsp__average_warps_issue_stalled_wait_per_issue_active.ratio"
"","","ns","register/thread","ratio","ratio","ratio"
"0","_score_kernel","146,600","64","5.25","0.10","1.50"
"1","_select_kernel","29,000","110","0.40","3.20","0.90"
'''

LONG = '''"ID","Process ID","Kernel Name","Section Name","Metric Name","Metric Unit","Metric Value"
"0","9","_filter_kernel","Command line profiler metrics","gpu__time_duration.sum","ns","23,200"
"0","9","_filter_kernel","Command line profiler metrics","launch__registers_per_thread","register/thread","90"
"1","9","_merge_kernel","Command line profiler metrics","gpu__time_duration.sum","ns","15,100"
'''


def test_summary_reads_both_csv_forms_and_ranks_stalls(tmp_path):
    (tmp_path / "wide.csv").write_text(WIDE)
    (tmp_path / "long.csv").write_text(LONG)
    rows = ps.read_ncu_csv(tmp_path / "wide.csv")
    assert [r["Kernel Name"] for r in rows] == ["_score_kernel", "_select_kernel"]  # units row dropped
    assert [r["Kernel Name"] for r in ps.read_ncu_csv(tmp_path / "long.csv")] == ["_filter_kernel", "_merge_kernel"]
    lines = ps.summarize([tmp_path / "wide.csv", tmp_path / "long.csv"]).splitlines()
    assert len(lines) == 2 + 4
    assert "| 146.6 |" in lines[2] and "| 64.0 |" in lines[2]
    assert lines[2].endswith("long_scoreboard 5.25, wait 1.50, barrier 0.10 |")  # largest first
    assert lines[3].endswith("barrier 3.20, wait 0.90, long_scoreboard 0.40 |")
    assert "| 23.2 |" in lines[4] and "| 90.0 |" in lines[4] and lines[5].split("|")[3].strip() == "15.1"


def test_empty_or_foreign_files_give_no_rows(tmp_path):
    (tmp_path / "x.csv").write_text("==ERROR== profiling failed\n")
    assert ps.read_ncu_csv(tmp_path / "x.csv") == []


def test_set_takes_one_value_per_field():
    assert ps.parse_args(["--set", "block_p=32", "int8_mma=false"]).set == ["block_p=32", "int8_mma=false"]
