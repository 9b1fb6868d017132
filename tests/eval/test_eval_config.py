"""conf/eval.yaml and its groups map 1:1 onto the option dataclasses; the eval script's pure parts."""

import itertools
import pathlib
from dataclasses import asdict, fields

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from unique_asr.config import DecodeOptions, SparsityConfig, TranscribeOptions

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf"


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides))


def _names(cls):
    return {f.name for f in fields(cls)} - {"decode", "sparsity"}


@pytest.mark.parametrize("sparsity,decode", list(itertools.product(_options("sparsity"), _options("decode"))))
def test_groups_build_the_dataclasses_with_exact_keys(scripts, sparsity, decode):
    cfg = _compose([f"sparsity={sparsity}", f"decode={decode}"])
    assert set(cfg.sparsity) == _names(SparsityConfig)
    assert set(cfg.decode) == _names(DecodeOptions)
    assert set(cfg.transcribe) == _names(TranscribeOptions)
    options = scripts("eval_wer").build_options(cfg)
    assert isinstance(options, TranscribeOptions)
    assert options.sparsity.mode == cfg.sparsity.mode and options.decode.beam_size == cfg.decode.beam_size
    assert isinstance(options.decode.temperatures, tuple)


def test_defaults_match_the_dataclass_defaults(scripts):
    """The greedy decode group and the transcribe node are the library defaults, field for field."""
    options = scripts("eval_wer").build_options(_compose(["sparsity=dense"]))
    assert options.decode == DecodeOptions()
    assert {
        f.name: getattr(options, f.name)
        for f in fields(TranscribeOptions)
        if f.name in _names(TranscribeOptions)
    } == {
        f.name: getattr(TranscribeOptions(), f.name)
        for f in fields(TranscribeOptions)
        if f.name in _names(TranscribeOptions)
    }


def test_sparsity_group_defaults_are_the_dataclass_defaults():
    """One set of defaults: conf/sparsity/dense.yaml states SparsityConfig()'s values, field for field."""
    assert OmegaConf.to_container(_compose(["sparsity=dense"]).sparsity) == asdict(SparsityConfig())


def test_unknown_or_missing_keys_fail(scripts):
    build = scripts("eval_wer").build_options
    cfg = _compose(["+sparsity.bogus=1"])
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        build(cfg)
    cfg = _compose()
    OmegaConf.set_struct(cfg, False)
    del cfg.decode["beam_size"]
    with pytest.raises(ValueError, match=r"missing keys \['beam_size'\]"):
        build(cfg)


def test_datasets_and_models(monkeypatch):
    monkeypatch.setenv("UNIQUE_ASR_DATA", "/data/here")
    for dataset in _options("dataset"):
        if dataset == "custom":
            continue
        cfg = _compose([f"dataset={dataset}"])
        assert cfg.dataset.name == dataset and cfg.dataset.manifest == f"/data/here/{dataset}/manifest.jsonl"
    assert {_compose([f"model={m}"]).model.name for m in _options("model")} >= {"base", "tiny.en"}


def test_output_path_is_unique_per_configuration(scripts, tmp_path):
    ev = scripts("eval_wer")

    def path(*overrides):
        cfg = _compose([f"paths.results={tmp_path}", *overrides])
        return ev.output_path(cfg, ev.run_description(cfg, ev.build_options(cfg)))

    a = path("sparsity=unique", "sparsity.budget=128")
    assert a.parent == tmp_path / "librispeech-test-other-dev-longform" / "base"
    assert a.name.startswith("unique-S8-T128-") and a.suffix == ".jsonl"
    assert path("sparsity=unique", "sparsity.budget=128") == a
    assert path("sparsity=unique", "sparsity.budget=256") != a
    assert path("sparsity=unique", "decode=beam5", "sparsity.budget=128") != a
    assert path("sparsity=dense").name.startswith("dense-")
    assert path("model.name=org/model").parent.name == "org--model"
    assert path(f"output={tmp_path}/x.jsonl") == tmp_path / "x.jsonl"
    with pytest.raises(ValueError, match="normaliser"):
        path("normaliser=nope")


def test_multirun_sweep_composes_one_job_per_budget(tmp_path):
    """Hydra -m over budgets runs one job each (limit=0: no transcription, so no model is loaded)."""
    import subprocess
    import sys

    from unique_asr.eval.manifest import write_jsonl

    manifest = write_jsonl(
        tmp_path / "set" / "manifest.jsonl", [{"id": "a", "path": "a.flac", "duration": 1.0, "text": "a"}]
    )
    cmd = [
        sys.executable,
        "scripts/eval_wer.py",
        "-m",
        "sparsity=unique",
        "sparsity.budget=128,256",
        "limit=0",
        "dataset=custom",
        "dataset.name=toy",
        f"dataset.manifest={manifest}",
        f"paths.results={tmp_path / 'res'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    result = subprocess.run(cmd, cwd=CONF.parent, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    logs = result.stdout + result.stderr
    assert "sparsity.budget=128" in logs and "sparsity.budget=256" in logs
    assert logs.count("toy: 0 of 0 items to transcribe") == 2
    assert "unique-S8-T128-" in logs and "unique-S8-T256-" in logs
