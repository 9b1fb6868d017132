"""Fine-tuned weights out: LoRA merged into the base linears, written as a Hugging Face Whisper folder
(config.json, generation_config.json, preprocessor_config.json, model.safetensors, tokenizer files) that
`load_whisper` / `unique_asr.load_model`, scripts/eval_wer.py (`model.name=<folder>`) and transformers'
`WhisperForConditionalGeneration` / `WhisperProcessor.from_pretrained` read like any other Whisper folder."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import nn

from unique_asr.models.checkpoint import to_hf_state_dict
from unique_asr.models.hf_folder import write_hf_files
from unique_asr.models.whisper import WhisperModel


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base linear and put the plain nn.Linear back (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return model


def export_whisper(model: WhisperModel, tokenizer_json: str | Path, folder: str | Path,
                   alignment_heads=None) -> Path:
    """Write a merged float32 copy of `model` (the model itself is left as it is) into `folder`.

    alignment_heads: (layer, head) pairs for word timestamps, when the base model's are known."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merged = merge_lora(copy.deepcopy(model)).float()
    state = {k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}
    hf = to_hf_state_dict(state, model.config)
    hf["proj_out.weight"] = hf[
        "proj_out.weight"
    ].clone()  # tied in transformers; safetensors wants no aliasing
    save_file(hf, folder / "model.safetensors", metadata={"format": "pt"})
    write_hf_files(folder, model.config, tokenizer_json, alignment_heads)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")  # byte for byte the tokenizer we trained with
    return folder
