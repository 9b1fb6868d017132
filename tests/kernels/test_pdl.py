"""Programmatic dependent launch of the decode step's kernels (kernels/_pdl.py): off where it cannot run, and in
the sm_90 builds the grid-dependency wait comes before every memory access (the ordering the module's contract
rests on)."""

import pytest
import torch
from offline_build import run_build
from unique_asr.kernels._pdl import ENV, pdl_enabled, pdl_launch


def test_pdl_is_off_on_cpu_and_under_the_interpreter(monkeypatch):
    t = torch.zeros(1)
    assert not pdl_enabled(t) and pdl_launch(t) == {"PDL": False}
    monkeypatch.setenv(ENV, "1")
    assert pdl_launch(t) == {"PDL": False}  # asking cannot turn it on where it cannot run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pdl_follows_the_device_and_the_switch(monkeypatch):
    t = torch.zeros(1, device="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(ENV, "1")
    hopper = torch.cuda.get_device_capability()[0] >= 9
    assert pdl_enabled(t) == hopper
    assert pdl_launch(t) == ({"PDL": True, "launch_pdl": True} if hopper else {"PDL": False})
    monkeypatch.setenv(ENV, "0")
    assert pdl_launch(t) == {"PDL": False}


BUILD_SCRIPT = r'''
from unique_asr.kernels.fused_step import skinny, triton as fs
from unique_asr.kernels.select_pages import triton as sp
from unique_asr.kernels.sparse_decode import triton as sd

MEMORY = ("LDG", "STG", "LDS", "STS", "LDGSTS", "UTMALDG", "ATOMG", "RED", "LD", "ST")
bf16 = {n: "*bf16" for n in ("x_ptr", "r_ptr", "w_ptr", "out_ptr", "q_ptr", "k_ptr", "v_ptr", "src_ptr", "dst_ptr")}
select_types = {"q_ptr": "*bf16", "table_ptr": "*i32", "lengths_ptr": "*i32", "mean_ptr": "*i8", "std_ptr": "*fp32",
                "sigma_ptr": "*bf16", "kmin_ptr": "*bf16", "kmax_ptr": "*bf16", "scale_ptr": "*fp32",
                "scores_ptr": "*fp32", "lam": "fp32"}
select_meta = dict(HKV=8, G=4, GP=16, D=128, BLOCK_D=128, S=8, BLOCK_P=64, MODE=0, PREC="tf32", PREFETCH=True,
                   FMA=False, SCORES_L2=True, FILL=False, HAS_SCALE=True, TC=5)
decode_types = dict(bf16, ids_ptr="*i32", table_ptr="*i32", len_ptr="*i32", part_o_ptr="*fp32",
                    part_lse_ptr="*fp32", qk_scale="fp32")
decode_meta = dict(G=4, HKV=8, S=8, D=128, BLOCK_G=16, BLOCK_N=64, NUM_SPLITS=4, DENSE=False, DOT_F32=False,
                   PREFETCH_IDS=True, PARTIALS=False)
KERNELS = {
    "add_rms_norm": (fs._add_rms_norm_kernel, dict(bf16, eps="fp32"), dict(HAS_X=True, SPLIT=1, BLOCK=4096)),
    "rotary": (fs._rotary_kernel, dict(bf16, freq_ptr="*fp32", pos_ptr="*i64"), dict(SPLIT=1, HALF=64, BLOCK=64)),
    "skinny": (skinny._skinny_kernel, bf16, dict(K_SLICE=3072, SILU=False, BLOCK_M=16, BLOCK_N=128, BLOCK_K=128,
                                                 DOT_F32=False, PREFETCH=0, LINE=64)),
    "score": (sp._score_kernel, select_types, select_meta),
    "decode": (sd._decode_kernel, decode_types, decode_meta),
}
for name, (fn, types, consts) in KERNELS.items():
    for pdl in (False, True):
        ops = op_sequence(fn, types, dict(consts, PDL=pdl), {"num_warps": 4, "launch_pdl": pdl})
        first_memory = next(i for i, op in enumerate(ops) if op in MEMORY)
        wait = ops.index("ACQBULK") if "ACQBULK" in ops else -1
        print(name, int(pdl), wait, first_memory, int("PREEXIT" in ops))
'''


def test_step_kernels_wait_before_any_memory_access():
    """Offline sm_90 builds of the norm, rotary, skinny GEMM, page scoring and attention kernels: with PDL the
    grid-dependency wait (ACQBULK) precedes the first load or store and the early launch of the next kernel
    (PREEXIT) is there; without PDL neither instruction is."""
    rows = {}
    for line in run_build(BUILD_SCRIPT):
        name, pdl, wait, first_memory, preexit = line.split()
        rows[name, int(pdl)] = (int(wait), int(first_memory), int(preexit))
    assert len(rows) == 10, rows
    for (name, pdl), (wait, first_memory, preexit) in rows.items():
        if pdl:
            assert 0 <= wait < first_memory and preexit, (name, rows[name, pdl])
        else:
            assert wait == -1 and not preexit, (name, rows[name, pdl])


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="needs a CUDA device of compute capability >= 9")
def test_pdl_chain_in_a_cuda_graph_equals_plain_launches(monkeypatch):
    """A chain of dependent PDL kernels (norm -> skinny GEMM -> norm of its split-K partials -> rotary), eager and
    replayed from a CUDA graph, equals the same chain launched without PDL, bit for bit."""
    from unique_asr.kernels.fused_step.skinny import SkinnyConfig, skinny_linear
    from unique_asr.kernels.fused_step.triton import add_rms_norm, rotary_sum

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    gen = torch.Generator(device="cuda").manual_seed(0)
    M, d, heads, head_dim = 16, 1024, 8, 128
    x = torch.randn(M, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    w_norm = torch.rand(d, device="cuda", dtype=torch.bfloat16, generator=gen) + 0.5
    weight = torch.randn(2 * heads * head_dim, d, device="cuda", dtype=torch.bfloat16, generator=gen) / 32
    positions = torch.arange(M, device="cuda") * 37
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, device="cuda").float() / head_dim)

    def chain():
        residual = x.clone()
        h = add_rms_norm(None, residual, w_norm, 1e-5)
        parts = skinny_linear(h, weight, SkinnyConfig(block_n=128, block_k=128, split=4))
        qkv = rotary_sum(parts, positions, inv_freq, heads, head_dim, torch.bfloat16)
        return add_rms_norm(qkv[:, :d], residual, w_norm, 1e-5), qkv

    monkeypatch.setenv("UNIQUE_PDL", "0")
    want = chain()
    monkeypatch.setenv("UNIQUE_PDL", "1")
    eager = chain()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = chain()
    graph.replay()
    torch.cuda.synchronize()
    for a, b, c in zip(want, eager, captured):
        assert torch.equal(a, b) and torch.equal(a, c)


PREFETCH_SCRIPT = r'''
from unique_asr.kernels.fused_step import skinny

types = {n: "*bf16" for n in ("x_ptr", "w_ptr", "out_ptr")}
for pdl, prefetch in ((False, 2), (True, 0), (True, 2)):
    consts = dict(K_SLICE=3072, SILU=False, BLOCK_M=16, BLOCK_N=128, BLOCK_K=128, DOT_F32=False, PDL=pdl,
                  PREFETCH=prefetch, LINE=64)
    ops = op_sequence(skinny._skinny_kernel, types, consts, {"num_warps": 8, "launch_pdl": pdl})
    prefetches = [i for i, op in enumerate(ops) if op == "CCTL"]
    wait = ops.index("ACQBULK") if "ACQBULK" in ops else -1
    print(int(pdl), prefetch, len(prefetches), max(prefetches, default=-1), wait)
'''


def test_skinny_gemm_prefetches_its_first_weight_tiles_before_the_wait():
    """SkinnyConfig.prefetch, offline sm_90 build of the pointer-load skinny GEMM (128 x 128 tiles, 8 warps: one
    128-byte line a thread a tile): with PDL, one L2 prefetch (CCTL) per prefetched tile, all before the
    grid-dependency wait; none without PDL or with prefetch 0."""
    rows = [tuple(map(int, line.split())) for line in run_build(PREFETCH_SCRIPT)]
    assert rows[0][2] == 0 and rows[1][2] == 0, rows
    _, prefetch, count, last, wait = rows[2]
    assert count == prefetch == 2 and 0 <= last < wait, rows
