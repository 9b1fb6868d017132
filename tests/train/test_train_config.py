"""conf/finetune.yaml and its groups compose for every choice and map 1:1 onto the recipe's dataclasses."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hydra import compose, initialize_config_dir
from script_loader import load_script
from train_helpers import ROOT

from unique_asr.config import SparsityConfig, TranscribeOptions
from unique_asr.models.whisper import SoftGateConfig

CONF = ROOT / "conf"
GROUPS = ("data", "gate", "lora", "optim", "trainer", "sparsity", "model", "paths")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="finetune", overrides=list(overrides))


def _fill(group: str, choice: str) -> list[str]:
    """Overrides that complete a choice with mandatory values (data=custom needs a manifest)."""
    return ["data.train=some/manifest.jsonl"] if (group, choice) == ("data", "custom") else []


@pytest.fixture(scope="module")
def finetune_script():
    return load_script("finetune")


@pytest.mark.parametrize("group,choice", [(g, c) for g in GROUPS for c in _options(g)])
def test_every_group_choice_builds_the_dataclasses(finetune_script, group, choice):
    cfg = _compose([f"{group}={choice}", *_fill(group, choice)])
    options = finetune_script.recipe_options(cfg)
    for name, cls in finetune_script.GROUPS.items():
        assert set(cfg[name]) == {f.name for f in fields(cls)}, name
        assert isinstance(options[name], cls)
    assert isinstance(options["eval_options"], TranscribeOptions)
    assert set(cfg.sparsity) == {f.name for f in fields(SparsityConfig)}


@pytest.mark.parametrize("gate,sparsity", [("none", "dense"), ("soft", "unique"), ("hard", "quest")])
def test_gate_follows_the_sparsity_pages(finetune_script, gate, sparsity):
    cfg = _compose([f"gate={gate}", f"sparsity={sparsity}", "sparsity.budget=96"])
    options = finetune_script.recipe_options(cfg)
    g = options["gate"]
    assert g == SoftGateConfig(mode=gate, tau=g.tau, page_size=8, budget=96, lam=0.5, kernel="auto")
    assert options["eval_options"].sparsity.budget == 96 and options["eval_options"].sparsity.mode == sparsity


def test_unknown_keys_fail(finetune_script):
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        finetune_script.recipe_options(_compose(["+optim.bogus=1"]))


def test_run_dir_names_the_arm():
    cfg = _compose(["gate=hard", "sparsity.budget=96"])
    assert cfg.run_dir.endswith("base-hard-S8-T96-decoder")
