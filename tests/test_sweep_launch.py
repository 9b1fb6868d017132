"""scripts/sweep_launch.py and the launch configs bench_kernels.py takes, without a GPU: grids and points
(scripts/launch_configs.py), their validation, the report table."""

from __future__ import annotations

import json

import pytest
from script_loader import load_script

sweep = load_script("sweep_launch")
bench = load_script("bench_kernels")


def test_grids_are_cartesian_unions_with_the_default_first():
    args = sweep.parse_args(["--select-grid", "block_r=1024,4096", "select_warps=none,8",
                             "--select-grid", "int8_mma=true", "--select-grid", "block_r=1024", "select_warps=none",
                             "--attn-grid", "programs_per_sm=1,2", "--dense-grid", "block_n=64,128"])
    assert args.select_points == [{}, {"block_r": 1024, "select_warps": None}, {"block_r": 1024, "select_warps": 8},
                                  {"block_r": 4096, "select_warps": None}, {"block_r": 4096, "select_warps": 8},
                                  {"int8_mma": True}]  # the repeated point is timed once
    assert args.attn_points == [{}, {"programs_per_sm": 1}, {"programs_per_sm": 2}]
    assert args.dense_points == [{}, {"block_n": 64}, {"block_n": 128}]  # over DENSE_CONFIG when timed


@pytest.mark.parametrize("grid, message", [
    (["--select-grid", "no_such=1"], "unknown field"),
    (["--select-grid", "block_r"], "expected field=v1,v2"),
    (["--select-grid", "block_r=big"], "takes integers"),
    (["--select-grid", "filter_split=48"], "filter_split must be"),   # SelectConfig's own check, before any GPU
    (["--attn-grid", "block_m=1"], "unknown field"),
    (["--dense-grid", "num_warps=two"], "takes integers"),
])
def test_bad_grids_fail_before_any_gpu_work(grid, message):
    with pytest.raises(SystemExit, match=message):
        sweep.parse_args(grid)


def test_report_ranks_by_time_and_flags_configs_that_changed_the_pages(tmp_path, capsys):
    rows = [dict(B=16, N=30000, kind="select", code="int8", config=c, ms=ms, vs_default=ms / 0.07, differs=d)
            for c, ms, d in (("default", 0.07, False), ("a=1", 0.05, False), ("b=2", 0.04, True),
                             ("c=3", 0.09, False))]
    rows.append(dict(B=16, N=30000, kind="select", code="int8", config="d=4", error="OutOfResources: shared"))
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(dict(device="x", rows=rows)))
    assert sweep.main(["--report", str(path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 16 ")]
    assert [line.split(" | ")[4] for line in lines] == ["default", "b=2", "a=1", "c=3", "d=4"]
    assert lines[1].endswith("| no |") and lines[2].endswith("| yes |") and "error: OutOfResources" in lines[4]


def test_bench_kernels_takes_one_config_per_kernel_over_its_own_defaults():
    """A sweep's winner runs through every bench_kernels arm: --select-config / --attn-config / --dense-config,
    one value per field, each over that kernel's defaults (the dense kernel's differ from the sparse one's)."""
    from unique_asr.kernels.select_pages.triton import SelectConfig
    from unique_asr.kernels.sparse_decode.triton import DENSE_CONFIG, SPARSE_CONFIG

    args = bench.parse_args(["--select-config", "pages_per_program=1024", "int8_mma=false",
                             "--attn-config", "num_warps=8", "--dense-config", "programs_per_sm=16"])
    assert args.configs == {"select": SelectConfig(pages_per_program=1024, int8_mma=False),
                            "sparse": SPARSE_CONFIG._replace(num_warps=8),
                            "dense": DENSE_CONFIG._replace(programs_per_sm=16)}
    assert bench.parse_args([]).configs == {}  # the committed defaults
    for argv, message in ((["--select-config", "block_r=1024,4096"], "one value per field"),
                          (["--select-config", "block_r=48"], "block_r must be"),
                          (["--dense-config", "block_m=1"], "unknown field")):
        with pytest.raises(SystemExit, match=message):
            bench.parse_args(argv)
