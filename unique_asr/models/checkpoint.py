"""Foreign Whisper weight formats -> our state dict (names of `unique_asr.models.whisper`).

- CTranslate2 model.bin (the bundled offline weights): fused q|k|v and k|v projections are split, names
  mapped, int8 weights dequantized; converted once and cached as safetensors under the user cache dir.
- Hugging Face Whisper folder (config.json + model.safetensors or pytorch_model.bin) and hub ids.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unique_asr.errors import ModelError
from unique_asr.fileio import create_temp
from unique_asr.models.ct2 import CT2Model, dequantize
from unique_asr.models.registry import PinnedFile
from unique_asr.models.whisper import WhisperConfig

CACHE_FORMAT = 1
_ATTN = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}


def cache_root() -> str:
    """$UNIQUE_ASR_CACHE, else $XDG_CACHE_HOME/unique-asr, else ~/.cache/unique-asr."""
    if os.environ.get("UNIQUE_ASR_CACHE"):
        return os.environ["UNIQUE_ASR_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "unique-asr")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_path(pinned: PinnedFile) -> str:
    """Path of a pinned file after checking its sha256 (ModelError naming the file on mismatch)."""
    path = pinned.locate()
    actual = sha256_file(path)
    if actual != pinned.sha256:
        raise ModelError(
            f"{path}: sha256 mismatch (expected {pinned.sha256}, got {actual}); reinstall {pinned.package}"
        )
    return path


def hf_name_map(config: WhisperConfig) -> dict[str, str]:
    """transformers `WhisperModel` parameter names (no `model.` prefix) -> ours, for every weight we hold."""
    m = {
        "encoder.embed_positions.weight": "encoder.pos_emb",
        "decoder.embed_positions.weight": "decoder.pos_emb",
        "decoder.embed_tokens.weight": "decoder.tok_emb.weight",
    }
    lin = ("weight", "bias")
    for p in lin:
        m.update(
            {
                f"encoder.conv1.{p}": f"encoder.conv1.{p}",
                f"encoder.conv2.{p}": f"encoder.conv2.{p}",
                f"encoder.layer_norm.{p}": f"encoder.ln_post.{p}",
                f"decoder.layer_norm.{p}": f"decoder.ln.{p}",
            }
        )
    blocks = [
        ("encoder", config.n_audio_layer, {"self_attn": "attn"}, {"self_attn_layer_norm": "attn_ln"}),
        (
            "decoder",
            config.n_text_layer,
            {"self_attn": "self_attn", "encoder_attn": "cross_attn"},
            {"self_attn_layer_norm": "self_ln", "encoder_attn_layer_norm": "cross_ln"},
        ),
    ]
    for side, layers, attns, norms in blocks:
        for i in range(layers):
            hf, our = f"{side}.layers.{i}", f"{side}.blocks.{i}"
            for p in lin:
                m[f"{hf}.final_layer_norm.{p}"] = f"{our}.mlp_ln.{p}"
                m[f"{hf}.fc1.{p}"], m[f"{hf}.fc2.{p}"] = f"{our}.mlp.fc1.{p}", f"{our}.mlp.fc2.{p}"
                for hn, on in norms.items():
                    m[f"{hf}.{hn}.{p}"] = f"{our}.{on}.{p}"
                for ha, oa in attns.items():
                    for o, h in _ATTN.items():
                        if not (o == "k" and p == "bias"):
                            m[f"{hf}.{ha}.{h}.{p}"] = f"{our}.{oa}.{o}.{p}"
    return m


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """Our state dict from a transformers Whisper state dict (`model.` prefix and proj_out are optional)."""
    state = {k.removeprefix("model."): v for k, v in hf_state.items()}
    names = hf_name_map(config)
    missing = [k for k in names if k not in state]
    if missing:
        raise ModelError(f"Whisper checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    return {ours: state[hf] for hf, ours in names.items()}


def to_hf_state_dict(state: dict[str, torch.Tensor], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """transformers `WhisperForConditionalGeneration` state dict from ours (proj_out tied to embeddings)."""
    out = {f"model.{hf}": state[ours] for hf, ours in hf_name_map(config).items()}
    out["proj_out.weight"] = state["decoder.tok_emb.weight"]
    return out


def _ct2_config(v: dict[str, torch.Tensor]) -> WhisperConfig:
    def count(prefix: str) -> int:
        return len(
            {
                k.split("/")[1]
                for k in v
                if k.startswith(prefix + "/layer_") and k.split("/")[1] != "layer_norm"
            }
        )

    d = v["encoder/conv1/weight"].shape[0]
    return WhisperConfig(
        n_mels=v["encoder/conv1/weight"].shape[1],
        n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=d,
        n_audio_head=int(v["encoder/num_heads"]),
        n_audio_layer=count("encoder"),
        n_vocab=v["decoder/embeddings/weight"].shape[0],
        n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
        n_text_state=v["decoder/embeddings/weight"].shape[1],
        n_text_head=int(v["decoder/num_heads"]),
        n_text_layer=count("decoder"),
    )


def _ct2_linear(v, src: str, dst: list[str]) -> dict[str, torch.Tensor]:
    """Split CTranslate2 linear `src` (weight [n·d, d], bias [n·d]) into len(dst) projections.

    The key projection (name ending in .k) drops its bias: Whisper has none (CTranslate2 stores zeros).
    """
    out = {}
    weights = dequantize(v, f"{src}/weight").chunk(len(dst))
    biases = v[f"{src}/bias"].chunk(len(dst))
    for name, w, b in zip(dst, weights, biases):
        out[f"{name}.weight"] = w
        if not name.endswith(".k"):
            out[f"{name}.bias"] = b
    return out


def _ct2_norm(v, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.weight": v[f"{src}/gamma"], f"{dst}.bias": v[f"{src}/beta"]}


def convert_ct2(model: CT2Model) -> tuple[WhisperConfig, dict[str, torch.Tensor]]:
    """Our (config, state dict) from a parsed CTranslate2 WhisperSpec model.

    Float variables keep their stored dtype (float16 in the bundled models: nothing is lost when cached);
    int8/int16 weights are dequantized to float32.
    """
    if model.spec != "WhisperSpec":
        raise ModelError(f"expected a CTranslate2 WhisperSpec model, got {model.spec!r}")
    v = model.variables
    try:
        config = _ct2_config(v)
        sd = {
            "encoder.pos_emb": v["encoder/position_encodings/encodings"],
            "decoder.pos_emb": v["decoder/position_encodings/encodings"],
            "decoder.tok_emb.weight": dequantize(v, "decoder/embeddings/weight"),
        }
        for conv in ("conv1", "conv2"):
            sd[f"encoder.{conv}.weight"] = dequantize(v, f"encoder/{conv}/weight")
            sd[f"encoder.{conv}.bias"] = v[f"encoder/{conv}/bias"]
        sd |= _ct2_norm(v, "encoder/layer_norm", "encoder.ln_post") | _ct2_norm(
            v, "decoder/layer_norm", "decoder.ln"
        )
        for i in range(config.n_audio_layer):
            src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
            sd |= _ct2_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            sd |= _ct2_linear(v, f"{src}/self_attention/linear_0", [f"{dst}.attn.{p}" for p in "qkv"])
            sd |= _ct2_linear(v, f"{src}/self_attention/linear_1", [f"{dst}.attn.out"])
            sd |= _ct2_ffn(v, src, dst)
        for i in range(config.n_text_layer):
            src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
            sd |= _ct2_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_ln")
            sd |= _ct2_linear(v, f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}" for p in "qkv"])
            sd |= _ct2_linear(v, f"{src}/self_attention/linear_1", [f"{dst}.self_attn.out"])
            sd |= _ct2_norm(v, f"{src}/attention/layer_norm", f"{dst}.cross_ln")
            sd |= _ct2_linear(v, f"{src}/attention/linear_0", [f"{dst}.cross_attn.q"])
            sd |= _ct2_linear(v, f"{src}/attention/linear_1", [f"{dst}.cross_attn.k", f"{dst}.cross_attn.v"])
            sd |= _ct2_linear(v, f"{src}/attention/linear_2", [f"{dst}.cross_attn.out"])
            sd |= _ct2_ffn(v, src, dst)
    except KeyError as exc:
        raise ModelError(f"CTranslate2 Whisper model lacks variable {exc.args[0]!r}") from None
    return config, sd


def _ct2_ffn(v, src: str, dst: str) -> dict[str, torch.Tensor]:
    return (
        _ct2_norm(v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
        | _ct2_linear(v, f"{src}/ffn/linear_0", [f"{dst}.mlp.fc1"])
        | _ct2_linear(v, f"{src}/ffn/linear_1", [f"{dst}.mlp.fc2"])
    )


def save_converted(directory: str, config: WhisperConfig, state: dict[str, torch.Tensor], meta: dict) -> None:
    """Write model.safetensors then config.json into `directory`, each via tmp file + rename.

    config.json is written last: its presence marks a complete conversion.
    """
    os.makedirs(directory, exist_ok=True)
    fd, path = create_temp(directory, "model.safetensors")  # the user's file mode (0666 & ~umask)
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    tmp = str(path)
    try:
        save_file({k: t.contiguous() for k, t in state.items()}, tmp)
        os.chmod(tmp, mode)  # save_file leaves 0600 behind
        os.replace(tmp, os.path.join(directory, "model.safetensors"))
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"format": CACHE_FORMAT, "whisper": config.to_dict(), **meta}, f, indent=1)
        os.replace(tmp, os.path.join(directory, "config.json"))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_converted(directory: str) -> tuple[WhisperConfig, dict[str, torch.Tensor], dict] | None:
    """(config, state dict, metadata) of a finished conversion in `directory`, or None when there is none.

    A damaged cache (unreadable JSON or safetensors) also gives None: it is derived data, so the caller
    reconverts and overwrites it.
    """
    config_path = os.path.join(directory, "config.json")
    weights_path = os.path.join(directory, "model.safetensors")
    if not (os.path.isfile(config_path) and os.path.isfile(weights_path)):
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != CACHE_FORMAT:
            return None
        return WhisperConfig(**meta.pop("whisper")), load_file(weights_path), meta
    except (OSError, ValueError, TypeError, KeyError, SafetensorError):
        return None


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _read_weights(folder: str) -> dict[str, torch.Tensor]:
    """transformers' state dict of a folder: one file or shards listed by an index (safetensors preferred)."""
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".index.json"):
            with open(path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
            if missing:
                raise ModelError(f"{folder}: shard {missing[0]} listed in {name} is missing")
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_one(os.path.join(folder, shard)))
            return state
        return _read_one(path)
    raise ModelError(f"{folder}: no model.safetensors, pytorch_model.bin or sharded index of either")


def _read_one(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


SHARD_INDEX = "model.safetensors.index.json"


def read_safetensors(folder: str) -> dict[str, torch.Tensor]:
    """model.safetensors, or every shard listed in model.safetensors.index.json (ModelError when one is missing
    or the index is unreadable): the speech-LLM families' weights."""
    index = os.path.join(folder, SHARD_INDEX)
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelError(f"{index}: unreadable shard index ({exc})") from None
    else:
        shards = ["model.safetensors"]
    state = {}
    for shard in shards:
        path = os.path.join(folder, shard)
        if not os.path.exists(path):
            raise ModelError(f"{folder}: missing weights file {shard}")
        try:
            state.update(load_file(path))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{path}: unreadable weights ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    return state


def load_hf_folder(folder: str) -> tuple[WhisperConfig, dict[str, torch.Tensor]]:
    """(config, our state dict) of a Hugging Face Whisper folder: model.safetensors, pytorch_model.bin, or
    either sharded (model-00001-of-0000N.safetensors ... with model.safetensors.index.json)."""
    from transformers import WhisperConfig as HFWhisperConfig

    try:
        config = WhisperConfig.from_hf(HFWhisperConfig.from_pretrained(folder))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: no usable Whisper config.json ({exc})") from None
    try:
        hf_state = _read_weights(folder)
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as exc:
        raise ModelError(f"{folder}: unreadable weights ({exc})") from None
    return config, from_hf_state_dict(hf_state, config)


def download_hub(repo_id: str, cache_dir: str | None = None) -> str:
    """Local folder of hub model `repo_id` (config, generation config, weights, tokenizer), fetched by
    huggingface_hub if needed into `cache_dir` (default: huggingface_hub's cache).

    Safetensors (one file or shards) are preferred; pytorch_model.bin only for repositories without them.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    meta = ["config.json", "generation_config.json", "tokenizer.json"]
    try:
        folder = snapshot_download(repo_id, allow_patterns=meta + ["model.safetensors", "model.safetensors.index.json",
                                                                   "model-*-of-*.safetensors"], cache_dir=cache_dir)
        if not any(os.path.isfile(os.path.join(folder, n)) for n in WEIGHT_FILES):
            folder = snapshot_download(repo_id, allow_patterns=meta + ["pytorch_model.bin", "pytorch_model.bin.index.json",
                                                                       "pytorch_model-*-of-*.bin"], cache_dir=cache_dir)
        return folder
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{repo_id}: cannot fetch from the Hugging Face hub (offline or unknown id: {first_line}); "
            "offline models: tiny.en, base"
        ) from None
