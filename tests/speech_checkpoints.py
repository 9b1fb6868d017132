"""Tiny random Voxtral and Qwen2-Audio checkpoints written by transformers' save_pretrained (built in the test,
no download), with a byte-level tokenizer holding each family's special tokens."""

from __future__ import annotations

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

CTX = 100  # encoder positions per window: 200 mel frames = 2 s of audio per window
TEXT = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=12, max_position_embeddings=512)
VOXTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AUDIO]", "[BEGIN_AUDIO]", "[TRANSCRIBE]"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                 "<|en|>"]


def _tokenizer(specials: list[str], folder, **named) -> int:
    """A byte-level tokenizer (specials first, then the 256 bytes) saved to folder; returns its vocab size."""
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=specials, **named)
    fast.save_pretrained(folder)
    return len(vocab)


def _spread(model) -> None:
    with torch.no_grad():  # random init leaves biases at zero and norms at one; spread logits (no near-ties)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
        model.lm_head.weight.mul_(30)


def voxtral(folder, seed: int = 0, **text):
    """A tiny VoxtralForConditionalGeneration (Llama decoder) saved to folder; returns the transformers model."""
    vocab = _tokenizer(VOXTRAL_SPECIALS, folder, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = tf.VoxtralConfig(
        audio_config=dict(model_type="voxtral_encoder", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, num_mel_bins=128, max_source_positions=CTX),
        text_config=dict(model_type="llama", vocab_size=vocab, **{**TEXT, **text}),
        audio_token_id=VOXTRAL_SPECIALS.index("[AUDIO]"))
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
