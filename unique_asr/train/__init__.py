"""Library side of the fine-tuning recipe (scripts/finetune.py, docs/finetune.md): data (manifests, packing,
collation, resumable sampler), lora (peft wiring), schedule (AdamW + lr schedule), state (checkpoints with
exact resume), loop (Trainer), evaluate (periodic WER), export (merged Whisper folder), run (assembly, DDP).
Modules are imported explicitly; importing this package loads nothing heavy."""
