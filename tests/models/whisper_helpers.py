"""Test helpers: a tiny random transformers Whisper built locally (no hub) and its config in our terms."""

from __future__ import annotations

import torch
from transformers import WhisperConfig as HFWhisperConfig
from transformers import WhisperForConditionalGeneration

from unique_asr.models.whisper import WhisperConfig

TINY = WhisperConfig(
    n_mels=80,
    n_audio_ctx=64,
    n_audio_state=64,
    n_audio_head=4,
    n_audio_layer=2,
    n_vocab=120,
    n_text_ctx=40,
    n_text_state=64,
    n_text_head=4,
    n_text_layer=2,
)


def hf_whisper(config: WhisperConfig, seed: int) -> WhisperForConditionalGeneration:
    """Random transformers Whisper of `config`'s shape (eager attention, eval mode, float32)."""
    torch.manual_seed(seed)
    hf_config = HFWhisperConfig(
        **config.to_hf_kwargs(),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        attn_implementation="eager",
    )
    model = WhisperForConditionalGeneration(hf_config).eval()
    # random init leaves biases at zero and norms at one: perturb them so the tests bite
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def greedy_text(model, tokenizer, encoder_out: torch.Tensor, sparsity=None, max_tokens: int = 60) -> str:
    """Plain greedy English decode of one window (no timestamps, no filters): the model alone, so model tests
    do not depend on the decoding module. encoder_out [1, F, d]; sparsity: cross-attention setting."""
    from unique_asr.models import SelfAttentionCache

    prompt = tokenizer.sot_sequence("en", timestamps=False)
    cross = model.cross_memory(encoder_out, sparsity=sparsity)
    cache = SelfAttentionCache.allocate(model.config, 1, len(prompt) + max_tokens)
    logits = model.decode(torch.tensor([prompt]), cache, cross)
    out = []
    for _ in range(max_tokens):
        token = int(logits[0, -1].argmax())
        if token == tokenizer.eot:
            break
        out.append(token)
        logits = model.decode(torch.tensor([[token]]), cache, cross)
    return tokenizer.decode(out)
