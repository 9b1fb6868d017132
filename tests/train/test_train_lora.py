"""LoRA wiring trains adapters only; activation checkpointing changes no gradient; the lr schedule."""

from __future__ import annotations

import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from train_helpers import SMALL

from unique_asr.models.whisper import SoftGateConfig, WhisperConfig
from unique_asr.train.loop import enable_gradient_checkpointing, token_loss
from unique_asr.train.lora import LoraOptions, apply_lora
from unique_asr.train.run import random_whisper
from unique_asr.train.schedule import OptimOptions, build_optimizer, lr_factor, param_groups
from unique_asr.train.state import trainable_state

GATE = SoftGateConfig(mode="soft", page_size=16, budget=96)


def _model(**lora):
    model = random_whisper(SMALL, "tiny.en", 0)[0]
    return apply_lora(model, LoraOptions(r=4, dropout=0.0, **lora))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(2, 80, 3000, generator=g)
    tokens = torch.randint(0, 1000, (2, 7), generator=g)
    return mel, tokens, torch.roll(tokens, -1, 1)


@pytest.mark.parametrize(
    "scope,targets,per_layer", [("decoder", ("attention", "mlp"), (0, 10)), ("all", ("attention",), (4, 8))]
)
def test_adapters_sit_on_the_chosen_linears_and_alone_train(scope, targets, per_layer):
    model = _model(scope=scope, targets=targets)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    c = WhisperConfig(**SMALL)
    assert len(wrapped) == per_layer[0] * c.n_audio_layer + per_layer[1] * c.n_text_layer
    assert all(n.startswith(("encoder.", "decoder.")) for n in wrapped)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer, _ = build_optimizer(model, OptimOptions(lr=1e-2, warmup_steps=0), 10)
    mel, tokens, labels = _batch()
    token_loss(model.forward_train(mel, tokens, GATE), labels).backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable and any("lora_B" in n for n in changed)


def test_full_finetuning_unfreezes_everything():
    model = apply_lora(random_whisper(SMALL, "tiny.en", 0)[0], LoraOptions(enabled=False))
    assert all(p.requires_grad for p in model.parameters())
    groups = param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    undecayed = {id(p) for p in groups[1]["params"]}
    assert id(model.decoder.tok_emb.weight) in undecayed and id(model.decoder.pos_emb) in undecayed
    assert id(model.decoder.blocks[0].mlp.fc1.weight) not in undecayed


def test_activation_checkpointing_keeps_gradients_and_names():
    plain, ckpt = _model(scope="all"), _model(scope="all")
    enable_gradient_checkpointing(ckpt)
    assert trainable_state(plain).keys() == trainable_state(ckpt).keys()
    for m in (plain, ckpt):
        mel, tokens, labels = _batch(1)
        token_loss(m.forward_train(mel, tokens, GATE), labels).backward()
    grads = [
        {
            n.replace("_checkpoint_wrapped_module.", ""): p.grad
            for n, p in m.named_parameters()
            if p.requires_grad
        }
        for m in (plain, ckpt)
    ]
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_schedule_shapes():
    cos = OptimOptions(warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, 110, cos) for s in (0, 9)] == [0.1, 1.0]
    assert lr_factor(60, 110, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, 110, cos) == pytest.approx(0.1)
    lin = OptimOptions(warmup_steps=0, decay="linear")
    assert [lr_factor(s, 100, lin) for s in (0, 50, 100)] == [1.0, 0.5, 0.0]
    assert lr_factor(70, 100, OptimOptions(warmup_steps=5, decay="constant")) == 1.0
    with pytest.raises(ValueError):
        OptimOptions(decay="step")
