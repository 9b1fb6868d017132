"""A Whisper folder's generation_config.json: what decoding needs from it, checked against the tokenizer.

- alignment_heads: (layer, head) pairs for word timestamps (wins over the published table);
- suppress_tokens: the tokens never emitted, used for DecodeOptions.suppress_tokens = (-1,) (the default)
  in place of the list built from OpenAI's symbol rules (the same list for OpenAI's checkpoints; a
  fine-tune may ship its own);
- lang_to_id / task_to_id / no_timestamps_token_id / decoder_start_token_id: checked against the
  tokenizer's ids. Decoding always prompts with the tokenizer's ids; a generation config whose ids differ
  was written for another tokenizer (transformers' save_pretrained of a randomly initialised model writes
  placeholder ids), so a warning is logged and its suppress list is not used.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from unique_asr.errors import ModelError


@dataclass(frozen=True)
class GenerationInfo:
    alignment_heads: tuple[tuple[int, int], ...] | None = None
    suppress_tokens: tuple[int, ...] | None = None
    begin_suppress_tokens: tuple[int, ...] | None = None
    lang_to_id: dict | None = None
    task_to_id: dict | None = None
    no_timestamps_token_id: int | None = None
    decoder_start_token_id: int | None = None


def read_generation_config(folder: str) -> GenerationInfo | None:
    """GenerationInfo of folder/generation_config.json; None when the folder has none."""
    path = os.path.join(folder, "generation_config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        heads = raw.get("alignment_heads")
        return GenerationInfo(
            alignment_heads=tuple((int(layer), int(head)) for layer, head in heads) if heads else None,
            suppress_tokens=tuple(int(t) for t in raw["suppress_tokens"]) if raw.get("suppress_tokens") else None,
            begin_suppress_tokens=tuple(int(t) for t in raw["begin_suppress_tokens"])
            if raw.get("begin_suppress_tokens") else None,
            lang_to_id=raw.get("lang_to_id"),
            task_to_id=raw.get("task_to_id"),
            no_timestamps_token_id=raw.get("no_timestamps_token_id"),
            decoder_start_token_id=raw.get("decoder_start_token_id"),
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: unreadable generation config ({exc})") from None


def check_and_apply(gen: GenerationInfo, tokenizer, n_layers: int, n_heads: int, where: str) -> None:
    """ModelError for alignment heads outside the decoder; a warning (and the config's suppress list left
    unused) when its token ids disagree with the tokenizer; else its suppress list becomes the tokenizer's
    non-speech list."""
    for layer, head in gen.alignment_heads or ():
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ModelError(f"{where}: alignment head ({layer}, {head}) outside the decoder's {n_layers} layers "
                             f"x {n_heads} heads")
    problem = _token_mismatch(gen, tokenizer)
    if problem:
        logging.getLogger(__name__).warning("%s: generation_config.json %s; its suppress list is not used", where,
                                            problem)
        return
    if gen.suppress_tokens is not None:
        tokenizer.non_speech_tokens = tuple(sorted(gen.suppress_tokens))  # overrides the cached rule-built list


def _token_mismatch(gen: GenerationInfo, tokenizer) -> str | None:
    expected = {"decoder_start_token_id": tokenizer.sot, "no_timestamps_token_id": tokenizer.no_timestamps}
    for key, value in expected.items():
        given = getattr(gen, key)
        if given is not None and int(given) != value:
            return f"{key} is {given}, the tokenizer's is {value}"
    for token, token_id in (gen.lang_to_id or {}).items():
        code = token.strip("<|>")
        if code not in tokenizer.language_codes or tokenizer.language_token(code) != int(token_id):
            return f"language token {token}={token_id} does not match the tokenizer"
    ours = {"transcribe": tokenizer.transcribe, "translate": tokenizer.translate}
    if any(ours.get(task) != int(token_id) for task, token_id in (gen.task_to_id or {}).items()):
        return "task tokens do not match the tokenizer"
    return None
