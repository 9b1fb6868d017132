"""Pins CLI flags to the option dataclasses (and back)."""

from dataclasses import fields

import pytest

from unique_asr.cli import FLAG_ALIASES, build_parser, expand_inputs, option_flags, options_from_args, output_stem
from unique_asr.config import DecodeOptions, SparsityConfig, TranscribeOptions


def _leaf_fields():
    names = [f.name for f in fields(TranscribeOptions) if f.name not in ("decode", "sparsity")]
    return names + [f.name for f in fields(DecodeOptions)] + [f.name for f in fields(SparsityConfig)]


def test_every_option_field_has_exactly_one_flag():
    flags = option_flags()
    assert sorted(name for _, name in flags.values()) == sorted(_leaf_fields())
    parser_flags = {a.dest for a in build_parser()._actions}
    for flag in flags:
        assert flag in parser_flags
    assert set(FLAG_ALIASES) <= set(_leaf_fields())


def test_no_flags_gives_dataclass_defaults():
    args = build_parser().parse_args(["a.wav"])
    assert options_from_args(args) == TranscribeOptions()


def test_flags_land_in_the_right_nested_dataclass():
    args = build_parser().parse_args([
        "a.wav", "--beam_size", "5", "--attention", "unique", "--budget", "256", "--page_size", "16",
        "--strategy", "sequential", "--temperatures", "0,0.5", "--language", "en", "--keep_first", "true",
        "--compression_ratio_threshold", "none",
    ])
    opts = options_from_args(args)
    assert opts.strategy == "sequential"
    assert opts.decode.beam_size == 5 and opts.decode.temperatures == (0.0, 0.5) and opts.decode.language == "en"
    assert opts.decode.compression_ratio_threshold is None
    assert opts.sparsity == SparsityConfig(mode="unique", budget=256, page_size=16, keep_first=True)


def test_invalid_values_are_value_errors():
    args = build_parser().parse_args(["a.wav", "--attention", "bogus"])
    with pytest.raises(ValueError, match="bogus"):
        options_from_args(args)


def test_expand_inputs(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/a.wav", "d/e/b.flac", "d/notes.txt", "c.mp3"):
        (tmp_path / name).write_bytes(b"x")
    sources, problems = expand_inputs([str(tmp_path / "d"), str(tmp_path / "*.mp3"), str(tmp_path / "missing.wav"), "-"])
    assert sources == [str(tmp_path / "d/a.wav"), str(tmp_path / "d/e/b.flac"), str(tmp_path / "c.mp3"), "-"]
    assert problems == [f"{tmp_path / 'missing.wav'}: no such file"]


def test_output_stems_are_unique():
    taken = set()
    assert [output_stem(s, taken) for s in ["x/a.wav", "y/a.flac", "-", "a.mp3"]] == ["a", "a-2", "stdin", "a-3"]


def test_compute_type_is_dtype_under_faster_whispers_name():
    """--compute_type is an alias of the one dtype field (CLI flag, API override), not a second option."""
    from unique_asr.config import field_aliases, with_overrides

    assert field_aliases() == {"compute_type": "dtype"}
    assert options_from_args(build_parser().parse_args(["a.wav", "--compute_type", "int8"])).dtype == "int8"
    assert options_from_args(build_parser().parse_args(["a.wav", "--dtype", "float32"])).dtype == "float32"
    assert with_overrides(TranscribeOptions(), compute_type="int8") == TranscribeOptions(dtype="int8")
    with pytest.raises(ValueError, match="compute_type and dtype name the same option"):
        with_overrides(TranscribeOptions(), compute_type="int8", dtype="float32")
    with pytest.raises(ValueError, match="dtype 'int4' is not one of"):
        options_from_args(build_parser().parse_args(["a.wav", "--compute_type", "int4"]))
    assert "--compute_type" in build_parser().format_help()


def test_load_model_takes_compute_type():
    import torch

    import unique_asr

    model = unique_asr.load_model("tiny.en", device="cpu", compute_type="int8")
    assert not [m for m in model.bundle.model.modules() if isinstance(m, torch.nn.Linear)]
    with pytest.raises(ValueError, match="give one of them"):
        unique_asr.load_model("tiny.en", device="cpu", dtype="float32", compute_type="int8")
