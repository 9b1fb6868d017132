"""Decoder-only speech-LLM families (Voxtral, Qwen2-Audio, the project's own format): tokenizer, transcription
prompt and the model object of the family interface (unique_asr.models.family).

Prompts follow what transformers' processors build for one recording window:
- Voxtral (`VoxtralProcessor.apply_transcription_request`, i.e. mistral_common's `encode_transcription`):
  `<s>[INST][BEGIN_AUDIO][AUDIO]x n[/INST]lang:xx[TRANSCRIBE]`; "lang:xx" only when the language is given.
- Qwen2-Audio (the base model's ASR prompt, as in its model card / evaluation):
  `<|audio_bos|><|AUDIO|>x n<|audio_eos|>Detect the language and recognize the speech: <|xx|>`; a checkpoint
  whose tokenizer carries a chat template (the Instruct model) gets the template rendered around a user turn
  holding the audio and "Transcribe the audio.".
- own format (`unique-asr-speech-llm`): the "prompt" block of its config.json, strings tokenized by its
  tokenizer.json.
A long recording is one sequence: the prompt's head (`prompt_ids`, kept as sink pages) once, then for every window
`chunk_prefix_ids`, that window's audio tokens, `chunk_suffix_ids`, and its transcript up to an end id.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch

from unique_asr.audio import HOP_LENGTH, SAMPLE_RATE
from unique_asr.config import SparsityConfig
from unique_asr.errors import ModelError
from unique_asr.models.speech_llm import SpeechLLM

QWEN2_AUDIO_ASR = "Detect the language and recognize the speech: "
QWEN2_AUDIO_INSTRUCTION = "Transcribe the audio."


@dataclass(frozen=True)
class TranscriptionPrompt:
    """Token ids around every window's audio tokens (see the module docstring); eos_ids end a transcript."""

    prompt_ids: tuple[int, ...]
    chunk_prefix_ids: tuple[int, ...]
    chunk_suffix_ids: tuple[int, ...]
    eos_ids: tuple[int, ...]

    def chunk(self, audio_token_id: int, n_audio: int) -> list[int]:
        """The ids of one window: prefix, n_audio placeholders, suffix."""
        return [*self.chunk_prefix_ids, *[audio_token_id] * n_audio, *self.chunk_suffix_ids]


class SpeechTokenizer:
    """A checkpoint's tokenizer through transformers: tokenizer.json, or Voxtral's tekken.json (mistral-common's
    format), which transformers >= 5 converts itself (no mistral-common needed; tests/models/test_tekken.py)."""

    def __init__(self, folder: str):
        from transformers import AutoTokenizer

        has_tekken = os.path.isfile(os.path.join(folder, "tekken.json"))
        if not os.path.isfile(os.path.join(folder, "tokenizer.json")) and not has_tekken and not os.path.isfile(
            os.path.join(folder, "vocab.json")
        ):
            raise ModelError(f"{folder}: no tokenizer (tokenizer.json, vocab.json or tekken.json)")
        try:
            self.hf = AutoTokenizer.from_pretrained(folder)
        except ImportError as exc:
            raise ModelError(f"{folder}: its tokenizer needs a package that is not installed ({exc}); for "
                             "tekken.json with transformers < 5: pip install mistral-common") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: unreadable tokenizer ({str(exc).splitlines()[0]})") from None
        self.is_multilingual = True

    def token_id(self, token: str, folder: str = "") -> int:
        """Id of a special token by its text; ModelError when the vocabulary lacks it."""
        ids = self.hf.convert_tokens_to_ids([token])
        unk = getattr(self.hf, "unk_token_id", None)
        if not ids or ids[0] is None or (ids[0] == unk and token != getattr(self.hf, "unk_token", None)):
            raise ModelError(f"{folder or 'tokenizer'}: the vocabulary has no {token} token")
        return int(ids[0])

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)


def voxtral_prompt(tok: SpeechTokenizer, audio_token_id: int, language: str | None, folder: str) -> TranscriptionPrompt:
    """mistral_common's transcription request, split around the audio tokens."""
    ids = {name: tok.token_id(name, folder) for name in
           ("<s>", "</s>", "[INST]", "[/INST]", "[BEGIN_AUDIO]", "[AUDIO]", "[TRANSCRIBE]")}
    if ids["[AUDIO]"] != audio_token_id:
        raise ModelError(f"{folder}: config audio_token_id {audio_token_id} is not the tokenizer's [AUDIO] "
                         f"({ids['[AUDIO]']})")
    lang = tok.encode(f"lang:{language}") if language else []
    return TranscriptionPrompt((ids["<s>"],), (ids["[INST]"], ids["[BEGIN_AUDIO]"]),
                               (ids["[/INST]"], *lang, ids["[TRANSCRIBE]"]), (ids["</s>"],))


def qwen2_audio_prompt(tok: SpeechTokenizer, audio_token_id: int, language: str | None,
                       folder: str) -> TranscriptionPrompt:
    """The base model's ASR prompt, or the chat template (Instruct) rendered around the audio."""
    audio = tok.token_id("<|AUDIO|>", folder)
    if audio != audio_token_id:
        raise ModelError(f"{folder}: config audio_token_id {audio_token_id} is not the tokenizer's <|AUDIO|> ({audio})")
    end = [tok.token_id("<|endoftext|>", folder)]
    template = getattr(tok.hf, "chat_template", None)
    if template:
        conversation = [{"role": "user", "content": [{"type": "audio", "audio_url": "window"},
                                                     {"type": "text", "text": QWEN2_AUDIO_INSTRUCTION}]}]
        text = tok.hf.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        if text.count("<|AUDIO|>") != 1:
            raise ModelError(f"{folder}: the chat template does not place one <|AUDIO|> for an audio turn")
        before, after = text.split("<|AUDIO|>")
        head, _, turn = before.rpartition("<|im_start|>user")
        end = [tok.token_id("<|im_end|>", folder), *end]
        return TranscriptionPrompt(tuple(tok.encode(head)), tuple(tok.encode("<|im_start|>user" + turn)),
                                   tuple(tok.encode(after)), tuple(end))
    lang = f"<|{language}|>" if language else ""
    return TranscriptionPrompt((), (tok.token_id("<|audio_bos|>", folder),),
                               tuple(tok.encode("<|audio_eos|>" + QWEN2_AUDIO_ASR + lang)), tuple(end))


def own_prompt(tok: SpeechTokenizer, spec: dict | None, folder: str) -> TranscriptionPrompt:
    """The "prompt" block of our format's config.json: {"prompt", "chunk_prefix", "chunk_suffix": str,
    "eos": [str]}."""
    if not spec or not spec.get("eos"):
        raise ModelError(f"{folder}: config.json has no transcription \"prompt\" block with \"eos\" tokens")
    return TranscriptionPrompt(tuple(tok.encode(spec.get("prompt", ""))), tuple(tok.encode(spec.get("chunk_prefix", ""))),
                               tuple(tok.encode(spec.get("chunk_suffix", ""))),
                               tuple(tok.token_id(t, folder) for t in spec["eos"]))


PROMPTS = {"voxtral": voxtral_prompt, "qwen2_audio": qwen2_audio_prompt}


class SpeechLLMModel:
    """A loaded speech-LLM as the family interface sees it (kind "decoder-only").

    net: the SpeechLLM (weights); prompt: how one recording's sequence is built; tokenizer. The decode state is
    a paged KV cache of one row per recording (unique_asr.models.paged_rows.PagedRows) and `memory(encoded)` is the
    audio tokens that a row's prefill places; a step reads only the state.
    """

    kind = "decoder-only"

    def __init__(self, family: str, net: SpeechLLM, tokenizer: SpeechTokenizer, prompt_for, sparsity: SparsityConfig):
        self.family, self.net, self.tokenizer, self.sparsity = family, net, tokenizer, sparsity
        self._prompt_for = prompt_for  # language -> TranscriptionPrompt
        self.config = net.config

    def with_sparsity(self, sparsity: SparsityConfig) -> SpeechLLMModel:
        model = copy.copy(self)
        model.sparsity = sparsity
        return model

    def prompt(self, language: str | None) -> TranscriptionPrompt:
        return self._prompt_for(language)

    def parameters(self):
        return self.net.parameters()

    @property
    def window_samples(self) -> int:
        """16 kHz samples one encoder window holds (2 mel frames per encoder frame: 30 s for real checkpoints)."""
        return 2 * self.net.config.encoder.n_audio_ctx * HOP_LENGTH

    @property
    def window_s(self) -> float:
        return self.window_samples / SAMPLE_RATE

    def memory(self, mel: torch.Tensor) -> torch.Tensor:
        """Audio tokens [W, tokens_per_window, d] of log-mel windows [W, n_mels, 2·n_audio_ctx]."""
        return self.net.audio_embeddings(mel)

    def allocate_state(self, rows: int, capacity: int):
        from unique_asr.models.paged_rows import PagedRows

        return PagedRows.allocate(self, rows, -(-capacity // self.sparsity.page_size) + 1)

    def step(self, tokens: torch.Tensor, state, memory=None) -> torch.Tensor:
        """tokens int64 [N, 1] -> logits [N, 1, V]: one token appended to every row of the state."""
        return state.step(tokens[:, 0], range(state.rows))[:, None]

    def step_planned(self, tokens: torch.Tensor, state, memory=None) -> torch.Tensor:
        """The device half of `step` on the plan of `state.plan_step(rows)`: tokens [A, 1] of the planned rows
        (every row, or the listed ones) -> [A, 1, V]."""
        return state.run_planned(tokens[:, 0])[:, None]

    def expand(self, state, memory, index: torch.Tensor):
        """Rows of a decoder-only state live in one page pool, so expanding is in place: row i of the same
        state takes row index[i]'s sequence (pages shared by reference; `index` names every row)."""
        if len(index) != state.rows:
            raise ValueError(f"expand needs one source per row ({state.rows}), got {len(index)}")
        self.reorder(state, memory, index)
        return state, memory

    def reorder(self, state, memory, index: torch.Tensor) -> None:
        """Row i continues row index[i] (beam search): shared pages, the partial last page copied on write."""
        index = torch.as_tensor(index).tolist()
        state.share(range(len(index)), index)
