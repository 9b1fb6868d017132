"""LoRA through peft on the attention and MLP linears of our `WhisperModel` (the model keeps its own class and
methods: peft swaps the targeted nn.Linear modules for LoRA layers in place).

Targets, by module name: `{encoder,decoder}.blocks.i.{attn,self_attn,cross_attn}.{q,k,v,out}` and
`{encoder,decoder}.blocks.i.mlp.{fc1,fc2}`; `scope` picks the decoder only or both stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

SCOPES = {"decoder": "decoder", "all": "encoder|decoder"}
TARGETS = {"attention": r"(attn|self_attn|cross_attn)\.(q|k|v|out)", "mlp": r"mlp\.(fc1|fc2)"}


@dataclass(frozen=True)
class LoraOptions:
    """enabled False: full fine-tuning (every parameter trains). r, alpha, dropout: peft's LoRA settings.
    scope: "decoder" | "all" (encoder too); targets: any of "attention", "mlp"."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    scope: str = "decoder"
    targets: tuple[str, ...] = ("attention", "mlp")

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"lora scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        unknown = set(self.targets) - set(TARGETS)
        if unknown or not self.targets:
            raise ValueError(
                f"lora targets must be a non-empty subset of {', '.join(TARGETS)}, got {self.targets}"
            )


def target_pattern(options: LoraOptions) -> str:
    """Full-match regex over module names (peft's `target_modules` as a string)."""
    layers = "|".join(TARGETS[t] for t in options.targets)
    return rf"({SCOPES[options.scope]})\.blocks\.\d+\.({layers})"


def apply_lora(model: nn.Module, options: LoraOptions) -> nn.Module:
    """Inject LoRA adapters (in place) and leave only them trainable; with enabled=False, unfreeze everything.

    Returns the same module object.
    """
    if not options.enabled:
        model.requires_grad_(True)
        return model
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=target_pattern(options),
    )
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model
