"""Our Llama/Qwen decoder on the paged cache == transformers' Qwen2ForCausalLM / LlamaForCausalLM (tiny random
configs built locally): prefill logits, then several teacher-forced decode steps against transformers' KV cache,
dense and sparse (budget >= all pages must equal dense; a small budget must not)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from unique_asr.kernels.fused_step import SkinnyConfig
from unique_asr.kernels.select_pages.registry import scores_for

from unique_asr.config import SparsityConfig
from unique_asr.errors import ModelError
from unique_asr.models.llm import LLM, LLMConfig, allocate_cache
from unique_asr.models.speech_llm_checkpoint import llm_state_from_hf

SELECT_MODES = scores_for("select")  # every score the decode kernel runs (the registry)

TEXT = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rope_theta=5000.0)


def perturb(model: torch.nn.Module) -> None:
    """Random init leaves biases at zero and norms at one: perturb them so the comparison bites."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))


def hf_text_model(kind: str, seed: int):
    torch.manual_seed(seed)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**TEXT, attn_implementation="eager"))
    else:
        model = LlamaForCausalLM(LlamaConfig(**TEXT, attention_bias=True, attn_implementation="eager"))
    perturb(model)
    return model.eval()


def ours_from(hf) -> LLM:
    config = LLMConfig.from_hf(hf.config)
    model = LLM(config).eval()
    model.load_state_dict(llm_state_from_hf(hf.state_dict(), config, prefix="model."))
    return model


def run_ours(model: LLM, ids: torch.Tensor, steps: torch.Tensor, sparsity: SparsityConfig,
             cache_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Prefill ids [B, T], then decode steps [B, n] one at a time; logits [B, T + n, V]."""
    B, T = ids.shape
    device = model.embed_tokens.weight.device
    ids, steps = ids.to(device), steps.to(device)
    cache = allocate_cache(model.config, sparsity, batch=B, num_pages=64,
                           dtype=cache_dtype or model.embed_tokens.weight.dtype, device=device)
    positions = torch.zeros(B, dtype=torch.int64, device=device)
    out = [model.logits(model.prefill(model.embed_tokens(ids), cache, positions))]
    positions += T
    for j in range(steps.shape[1]):
        h = model.decode_step(model.embed_tokens(steps[:, j]), cache, positions, sparsity)
        out.append(model.logits(h)[:, None])
        positions += 1
    return torch.cat(out, dim=1)


def run_hf(hf, ids: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    cache = DynamicCache(config=hf.config)
    out = [hf(input_ids=ids, past_key_values=cache, use_cache=True).logits]
    for j in range(steps.shape[1]):
        out.append(hf(input_ids=steps[:, j:j + 1], past_key_values=cache, use_cache=True).logits)
    return torch.cat(out, dim=1).float()


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@torch.no_grad()
def test_prefill_and_decode_match_transformers(kind):
    hf = hf_text_model(kind, seed=int(torch.randint(0, 2**31 - 1, ())))
    ours = ours_from(hf)
    ids, steps = torch.randint(0, 97, (2, 21)), torch.randint(0, 97, (2, 5))
    ref = run_hf(hf, ids, steps)
    dense = run_ours(ours, ids, steps, SparsityConfig(mode="dense", page_size=4, budget=4))
    torch.testing.assert_close(dense, ref, atol=2e-4, rtol=1e-4)
    for mode in SELECT_MODES:  # every page selected: exactly dense
        full = run_ours(ours, ids, steps, SparsityConfig(mode=mode, page_size=4, budget=64))
        torch.testing.assert_close(full, ref, atol=2e-4, rtol=1e-4)


@torch.no_grad()
def test_small_budget_changes_decode_only():
    hf = hf_text_model("qwen2", seed=int(torch.randint(0, 2**31 - 1, ())))
    ours = ours_from(hf)
    ids, steps = torch.randint(0, 97, (1, 40)), torch.randint(0, 97, (1, 3))
    dense = run_ours(ours, ids, steps, SparsityConfig(mode="dense", page_size=4, budget=8))
    sparse = run_ours(ours, ids, steps, SparsityConfig(mode="unique", page_size=4, budget=8))
    torch.testing.assert_close(sparse[:, :40], dense[:, :40])  # prefill is dense either way
    assert (sparse[:, 40:] - dense[:, 40:]).abs().max() > 1e-3  # 2 of 11 pages read: the sparse path ran
    edges = run_ours(ours, ids, steps, SparsityConfig(mode="unique", page_size=4, budget=8, keep_first=True,
                                                      keep_last=True))
    assert (edges[:, 40:] - sparse[:, 40:]).abs().max() > 1e-4  # sink + last page forced: other pages read
    kept_dense = run_ours(ours, ids, steps, SparsityConfig(mode="unique", page_size=4, budget=8, dense_layers=2))
    torch.testing.assert_close(kept_dense, dense, atol=1e-5, rtol=1e-5)
    # int8 means re-ranked over every held page (refine 16 >= 11 pages): the pool-dtype means decide, as in `sparse`
    refined = run_ours(ours, ids, steps, SparsityConfig(mode="unique", page_size=4, budget=8, stats_dtype="int8",
                                                        refine=16))
    torch.testing.assert_close(refined, sparse, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_bf16_cache_stays_close():
    hf = hf_text_model("llama", seed=int(torch.randint(0, 2**31 - 1, ())))
    ours = ours_from(hf).to(torch.bfloat16)
    ids, steps = torch.randint(0, 97, (2, 13)), torch.randint(0, 97, (2, 3))
    ref = run_hf(hf, ids, steps)
    for mode in ("dense", "unique"):
        cache_logits = run_ours(ours, ids, steps, SparsityConfig(mode=mode, page_size=4, budget=64))
        assert (cache_logits - ref).abs().max() < 0.1 * ref.abs().max()


@torch.no_grad()
def test_sparse_triton_decode_path():
    """The model's decode step on the Triton kernels (interpreter on CPU), fp16 pool: with every page selected it
    equals the dense torch path; with a small budget it reads fewer pages (page choices between the kernel and
    its twin may flip on near-ties in fp16, so the small budget is not compared token for token). On a GPU
    machine the model runs on the GPU (Triton launches no CPU tensors there)."""
    hf = hf_text_model("qwen2", seed=int(torch.randint(0, 2**31 - 1, ())))
    ours = ours_from(hf).to("cuda" if torch.cuda.is_available() else "cpu")
    ids, steps = torch.randint(0, 97, (2, 22)), torch.randint(0, 97, (2, 2))

    def run(mode, budget, backend):
        sparsity = SparsityConfig(mode=mode, page_size=4, budget=budget, backend=backend)
        return run_ours(ours, ids, steps, sparsity, cache_dtype=torch.float16)

    dense = run("dense", 4, "sparse-torch")
    torch.testing.assert_close(run("unique", 64, "sparse-triton"), dense, atol=2e-2, rtol=1e-2)
    sparse = run("unique", 8, "sparse-triton")
    assert torch.isfinite(sparse).all() and (sparse[:, 22:] - dense[:, 22:]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", ["torch", "triton"])
@torch.no_grad()
def test_fused_decode_step_equals_the_unfused_step(backend):
    """Issue 11 item 7: the fused step (one QKV and one gate+up GEMM on concatenated weights, rotary in place,
    residual adds fused into the norms; Triton kernels under the interpreter on CPU) equals the modules' step,
    and the modules' weights are views of the concatenations (no second copy; the state dict unchanged)."""
    hf = hf_text_model("qwen2", seed=int(torch.randint(0, 2**31 - 1, ())))
    ours = ours_from(hf)
    if backend == "triton" and torch.cuda.is_available():  # the kernels on the GPU (interpreter on CPU)
        ours = ours.cuda()
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    ids, steps = torch.randint(0, 97, (3, 18)), torch.randint(0, 97, (3, 4))
    sparsity = SparsityConfig(mode="unique", page_size=4, budget=8)
    ours.fused_step = False
    reference = run_ours(ours, ids, steps, sparsity)
    ours.fused_step, ours.fused_backend = True, backend
    fused = run_ours(ours, ids, steps, sparsity)
    torch.testing.assert_close(fused, reference, atol=1e-4 if fused.device.type == "cpu" else 2e-3, rtol=1e-4)
    attn, mlp = ours.layers[0].self_attn, ours.layers[0].mlp
    qkv, bias = attn._qkv
    assert attn.k_proj.weight.data_ptr() == qkv[attn.q_proj.weight.shape[0]:].data_ptr() and bias is not None
    assert mlp.up_proj.weight.data_ptr() == mlp._gate_up[0][mlp.gate_proj.weight.shape[0]:].data_ptr()
    assert all(torch.equal(v, state[k]) for k, v in ours.state_dict().items())
    ours.to(torch.float64).to(torch.float32)  # parameters replaced: the concatenation is rebuilt, not stale
    torch.testing.assert_close(run_ours(ours, ids, steps, sparsity), fused, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@torch.no_grad()
def test_skinny_gemm_step_equals_the_unfused_step(backend):
    """The decode step with every projection on the skinny GEMM (split-K partials summed by the rotary and norm
    passes, silu(gate) * up formed in the down projection's load; biases of a Llama with attention_bias added)
    equals the modules' step (Triton under the interpreter on CPU)."""
    hf = hf_text_model("llama", seed=int(torch.randint(0, 2**31 - 1, ())))
    ours = ours_from(hf)
    if backend == "triton" and torch.cuda.is_available():  # the kernels on the GPU (interpreter on CPU)
        ours = ours.cuda()
    ids, steps = torch.randint(0, 97, (2, 5)), torch.randint(0, 97, (2, 1))
    sparsity = SparsityConfig(mode="unique", page_size=4, budget=8)
    ours.fused_step = False
    reference = run_ours(ours, ids, steps, sparsity)
    ours.fused_step, ours.fused_backend = True, backend  # tiles as large as the shapes allow: few programs
    ours.step_gemms = {"qkv": SkinnyConfig(64, 32, 2, stages=1), "o": SkinnyConfig(64, 32, 2, stages=1),
                       "gate_up": SkinnyConfig(64, 64, 1, stages=1), "down": SkinnyConfig(64, 16, 2, stages=1)}
    tol = 1e-4 if reference.device.type == "cpu" else 2e-3  # fp32 GEMMs in tf32 on the GPU
    torch.testing.assert_close(run_ours(ours, ids, steps, sparsity), reference, atol=tol, rtol=1e-4)


def test_unsupported_decoders_are_refused():
    config = Qwen2Config(**TEXT)
    config.model_type = "qwen3"
    with pytest.raises(ModelError, match="qwen3"):
        LLMConfig.from_hf(config)
    with pytest.raises(ModelError, match="rotary"):
        LLMConfig.from_hf(LlamaConfig(**{**TEXT, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}))


@torch.no_grad()
def test_step_gemm_plan_checks_and_times_every_candidate():
    """plan_step_gemms checks each candidate against cuBLAS's product, times it with cuBLAS over every layer's
    weights and keeps the fastest per kind (Triton under the interpreter on CPU; the planned step's equality
    with the modules' step: the test above); biased projections stay on cuBLAS."""
    from unique_asr.models.step_gemms import plan_step_gemms

    torch.manual_seed(0)
    ours = ours_from(LlamaForCausalLM(LlamaConfig(**TEXT, attn_implementation="eager")).eval())
    if torch.cuda.is_available():  # the GPU path takes bf16 / fp16 weights only
        ours = ours.to("cuda", torch.bfloat16)
    one = (SkinnyConfig(16, 16, 2, stages=1),)
    plan, timings = plan_step_gemms(ours, 2, rounds=1, candidates=dict.fromkeys(("o", "down"), one))
    assert set(timings) == {"o", "down"} and set(plan.values()) <= set(one)
    assert all(set(t) == {"cublas", str(one[0])} and all(isinstance(v, float) for v in t.values())
               for t in timings.values())
    down = ours.layers[0].mlp.down_proj
    down.bias = torch.nn.Parameter(torch.zeros_like(down.weight[:, 0]))
    _, timings = plan_step_gemms(ours, 2, rounds=1, candidates={"down": one})
    assert set(timings["down"]) == {"cublas"}
