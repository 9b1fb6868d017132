"""The Hugging Face side files of a Whisper folder: config.json with Whisper's special-token ids,
generation_config.json, preprocessor_config.json and the tokenizer files, so that
`WhisperForConditionalGeneration.from_pretrained` and `WhisperProcessor.from_pretrained` load a folder we
write (the fine-tuning export) as they load openai/whisper-* from the hub.

The token ids come from our tokenizer (tokenizer.json), the suppress lists from the same rules the decoder
uses (OpenAI's non-speech symbols; a blank or <|endoftext|> never starts a text), so the folder carries what
our decoding does. transformers is imported only here, when a folder is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unique_asr.models.tokenizer import WhisperTokenizer
from unique_asr.models.whisper import WhisperConfig


def generation_fields(tokenizer: WhisperTokenizer, config: WhisperConfig,
                      alignment_heads: Sequence[tuple[int, int]] | None = None) -> dict:
    """generation_config.json fields of a Whisper checkpoint, as OpenAI's hub folders carry them."""
    fields = {
        "decoder_start_token_id": tokenizer.sot,
        "bos_token_id": tokenizer.eot,
        "eos_token_id": tokenizer.eot,
        "pad_token_id": tokenizer.eot,
        "max_length": config.n_text_ctx,
        "no_timestamps_token_id": tokenizer.no_timestamps,
        "prev_sot_token_id": tokenizer.sot_prev,
        "suppress_tokens": list(tokenizer.non_speech_tokens),
        "begin_suppress_tokens": [tokenizer.encode(" ")[0], tokenizer.eot],
        "is_multilingual": tokenizer.is_multilingual,
    }
    if tokenizer.is_multilingual:
        fields["lang_to_id"] = {f"<|{code}|>": tokenizer.language_token(code) for code in tokenizer.language_codes}
        fields["task_to_id"] = {"transcribe": tokenizer.transcribe, "translate": tokenizer.translate}
    if alignment_heads:
        fields["alignment_heads"] = [list(map(int, pair)) for pair in alignment_heads]
    return fields


def write_hf_files(folder: str | Path, config: WhisperConfig, tokenizer_json: str | Path,
                   alignment_heads: Sequence[tuple[int, int]] | None = None) -> None:
    """Write config.json, generation_config.json, preprocessor_config.json and the tokenizer files."""
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast
    from transformers import WhisperConfig as HFWhisperConfig

    folder = Path(folder)
    ours = WhisperTokenizer(str(tokenizer_json), config.n_vocab)
    gen = generation_fields(ours, config, alignment_heads)
    token_ids = {k: gen[k] for k in ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")}
    HFWhisperConfig(**config.to_hf_kwargs(), **token_ids).save_pretrained(folder)  # suppress lists: generation
    GenerationConfig(**gen).save_pretrained(folder)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json), unk_token="<|endoftext|>",
                                     bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     pad_token="<|endoftext|>")
    features = WhisperFeatureExtractor(feature_size=config.n_mels)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)
    features.save_pretrained(folder)  # preprocessor_config.json too: what transformers 4.x processors read
