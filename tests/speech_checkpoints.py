"""Tiny random Voxtral and Qwen2-Audio checkpoints written by transformers' save_pretrained (built in the test,
no download), with a byte-level tokenizer holding each family's special tokens."""

from __future__ import annotations

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

# max_position_embeddings 4096: the parity tests' recordings (8 windows of ~104 tokens) stay inside the trained
# context; past it our rows evict pages and transformers does not, so tokens may differ (512 made windows 6-8
# evict, and they matched transformers only by chance). The eviction test builds its own short context.
CTX = 100  # encoder positions per window: 200 mel frames = 2 s of audio per window
TEXT = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=12, max_position_embeddings=4096)
VOXTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AUDIO]", "[BEGIN_AUDIO]", "[TRANSCRIBE]"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                 "<|en|>"]


def _tokenizer(specials: list[str], folder, **named) -> int:
    """A byte-level tokenizer (specials first, then the 256 bytes) saved to folder; returns its vocab size."""
    vocab = {t: i for i, t in enumerate(specials)}
    # sorted: alphabet() comes in Python's per-process hash order, so the byte tokens' ids (and with them what
    # every speech-LLM test decodes) changed from run to run
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=specials, **named)
    fast.save_pretrained(folder)
    return len(vocab)


# A Tekken file (Voxtral's tekken.json, mistral-common's format) with the special tokens at Voxtral's ranks
TEKKEN_SPECIALS = {"<unk>": 0, "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "[AUDIO]": 24, "[BEGIN_AUDIO]": 25,
                   "[TRANSCRIBE]": 34}
TEKKEN_NUM_SPECIAL = 40
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                  r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
                  r"\s+(?!\S)|\s+")


def _tekken(folder) -> int:
    """tekken.json (version v7): TEKKEN_NUM_SPECIAL control tokens, then the 256 bytes (no merges); returns the
    vocab size. Token id = rank for specials, TEKKEN_NUM_SPECIAL + byte for bytes."""
    import base64
    import json
    from pathlib import Path

    names = {rank: name for name, rank in TEKKEN_SPECIALS.items()}
    special = [{"rank": i, "token_str": names.get(i, f"<SPECIAL_{i}>"), "is_control": True}
               for i in range(TEKKEN_NUM_SPECIAL)]
    vocab = [{"rank": b, "token_bytes": base64.b64encode(bytes([b])).decode(),
              "token_str": chr(b) if 32 <= b < 127 else None} for b in range(256)]
    size = TEKKEN_NUM_SPECIAL + 256
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "tekken.json").write_text(json.dumps({
        "config": {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": 256, "default_vocab_size": size,
                   "default_num_special_tokens": TEKKEN_NUM_SPECIAL, "version": "v7"},
        "vocab": vocab, "special_tokens": special}))
    return size


def _spread(model) -> None:
    with torch.no_grad():  # random init leaves biases at zero and norms at one; spread logits (no near-ties)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
        model.lm_head.weight.mul_(30)


def voxtral(folder, seed: int = 0, tekken: bool = False, **text):
    """A tiny VoxtralForConditionalGeneration (Llama decoder) saved to folder; returns the transformers model.
    tekken: the tokenizer as Voxtral ships it (tekken.json only) instead of tokenizer.json."""
    if tekken:
        vocab = _tekken(folder)
    else:
        vocab = _tokenizer(VOXTRAL_SPECIALS, folder, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = tf.VoxtralConfig(
        audio_config=dict(model_type="voxtral_encoder", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, num_mel_bins=128, max_source_positions=CTX),
        text_config=dict(model_type="llama", vocab_size=vocab, **{**TEXT, **text}),
        audio_token_id=TEKKEN_SPECIALS["[AUDIO]"] if tekken else VOXTRAL_SPECIALS.index("[AUDIO]"))
    model = tf.VoxtralForConditionalGeneration(config)
    _spread(model)
    model.save_pretrained(folder)
    return model.eval()


def qwen2_audio(folder, seed: int = 0, **text):
    """A tiny Qwen2AudioForConditionalGeneration (Qwen2 decoder) saved to folder (sharded weights)."""
    vocab = _tokenizer(QWEN_SPECIALS, folder, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = tf.Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", d_model=32, encoder_layers=2, encoder_attention_heads=4,
                          encoder_ffn_dim=128, num_mel_bins=128, max_source_positions=CTX),
        text_config=dict(model_type="qwen2", vocab_size=vocab, **{**TEXT, **text}),
        audio_token_index=QWEN_SPECIALS.index("<|AUDIO|>"))
    model = tf.Qwen2AudioForConditionalGeneration(config)
    _spread(model)
    model.save_pretrained(folder, max_shard_size="100KB")
    return model.eval()
