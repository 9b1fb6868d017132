"""Whisper's tokenizer over tokenizer.json (Hugging Face `tokenizers`) with the special tokens decoding needs.

Timestamp tokens follow <|notimestamps|>: id timestamp_begin + i means i·0.02 s. Some tokenizer.json files
(e.g. tiny.en's) do not list them, so timestamps are handled by id arithmetic, never by vocabulary lookup.
"""

from __future__ import annotations

from functools import cached_property

from tokenizers import Tokenizer

from unique_asr.errors import ModelError

TIME_PRECISION = 0.02


class WhisperTokenizer:
    """Text <-> token ids, special-token ids, and the start-of-transcript prompt of a Whisper model."""

    def __init__(self, path: str, n_vocab: int):
        """path: tokenizer.json; n_vocab: the model's vocabulary (51865 multilingual, 51864 English-only)."""
        try:
            self._tok = Tokenizer.from_file(path)
        except Exception as exc:  # tokenizers raises a bare Exception on unreadable JSON
            raise ModelError(f"{path}: unreadable tokenizer.json ({exc})") from None
        self.n_vocab = n_vocab
        ids = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items()}

        def special(*names: str) -> int:
            for name in names:
                if name in ids:
                    return ids[name]
            raise ModelError(f"{path}: tokenizer.json lacks the special token {names[0]}")

        self.eot = special("<|endoftext|>")
        self.sot = special("<|startoftranscript|>")
        self.translate = special("<|translate|>")
        self.transcribe = special("<|transcribe|>")
        self.sot_lm = special("<|startoflm|>")
        self.sot_prev = special("<|startofprev|>")
        self.no_speech = special("<|nospeech|>", "<|nocaptions|>")
        self.no_timestamps = special("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1
        # language tokens sit between <|startoftranscript|> and <|translate|>, in Whisper's language order
        self.language_codes: tuple[str, ...] = tuple(
            name[2:-2] for name in sorted(ids, key=ids.get) if self.sot < ids[name] < self.translate
        )
        self._language_ids = {code: self.sot + 1 + i for i, code in enumerate(self.language_codes)}

    @property
    def is_multilingual(self) -> bool:
        """English-only checkpoints have one token fewer (51864) and no language/task tokens in the prompt."""
        return self.n_vocab >= 51865

    @property
    def language_tokens(self) -> tuple[int, ...]:
        return tuple(self._language_ids[c] for c in self.language_codes)

    def language_token(self, code: str) -> int:
        if code not in self._language_ids:
            raise ValueError(f"unknown language {code!r}; known: {', '.join(self.language_codes)}")
        return self._language_ids[code]

    def sot_sequence(
        self, language: str | None = "en", task: str = "transcribe", timestamps: bool = True
    ) -> list[int]:
        """Prompt that starts decoding: [sot, lang, task] (multilingual) or [sot] (English-only), then
        <|notimestamps|> when timestamps are off. language None leaves out the language token (to detect)."""
        seq = [self.sot]
        if self.is_multilingual:
            if language is not None:
                seq.append(self.language_token(language))
            if task not in ("transcribe", "translate"):
                raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
            seq.append(self.transcribe if task == "transcribe" else self.translate)
        elif language not in (None, "en") or task != "transcribe":
            raise ValueError("an English-only model only transcribes English")
        if not timestamps:
            seq.append(self.no_timestamps)
        return seq

    def encode(self, text: str) -> list[int]:
        """Text token ids (no special tokens added)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """Text of the text tokens in ids (ids >= eot, i.e. specials and timestamps, are skipped)."""
        return self._tok.decode([int(i) for i in ids if int(i) < self.eot])

    def decode_with_timestamps(self, ids) -> str:
        """Text with timestamp tokens written as <|1.08|> (other special tokens skipped)."""
        parts, text = [], []
        for i in map(int, ids):
            if i >= self.timestamp_begin:
                parts.append(self.decode(text))
                parts.append(f"<|{(i - self.timestamp_begin) * TIME_PRECISION:.2f}|>")
                text = []
            else:
                text.append(i)
        parts.append(self.decode(text))
        return "".join(parts)

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Ids of symbols that are not speech (brackets, music notes, speaker dashes...): OpenAI's set.

        Symbols count when they encode to a single token alone or after a space; music notes always count
        (first token); " -" and " '" are included too.
        """
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        music = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + sorted(music):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in music:
                    result.add(tokens[0])
        return tuple(sorted(result))
