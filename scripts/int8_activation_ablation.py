"""Which int8 Linears gain from per-row activation scales (unique_asr/models/quantize.py): base int8, one
transcription of a manifest per arm (batched, batch 8, timestamps off, language en, 2 threads, no previous
text), arms switching `Int8Linear.per_row` on the encoder's and the decoder's Linears. Prints each arm's word
errors (the Whisper normaliser) and wall seconds; the errors decide, the walls are one unalternated run each.

    OMP_WAIT_POLICY=PASSIVE python scripts/int8_activation_ablation.py \
        ../shared/data/librispeech-test-other-dev-longform/manifest.jsonl
"""

from __future__ import annotations

import argparse
import time

import unique_asr
from unique_asr.eval.align import align
from unique_asr.eval.manifest import load_dataset
from unique_asr.eval.normalise import words
from unique_asr.models.quantize import Int8Linear

ARMS = {  # name: (encoder per row, decoder per row)
    "per tensor everywhere": (False, False),
    "per row in the decoder only": (False, True),
    "per row in the encoder only (default)": (True, False),
    "per row everywhere": (True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    items = load_dataset(args.manifest)
    model = unique_asr.load_model(args.model, device="cpu", dtype="int8")
    net = model.bundle.model
    reference = words(" ".join(item.text for item in items))
    print(f"{'arm':40s} {'errors':>7s} {'of':>6s} {'WER %':>6s} {'wall s':>7s}")
    for name, (encoder, decoder) in ARMS.items():
        for part, per_row in ((net.encoder, encoder), (net.decoder, decoder)):
            for module in part.modules():
                if isinstance(module, Int8Linear):
                    module.per_row = per_row
        start = time.perf_counter()
        hypothesis = " ".join(
            " ".join(s.text for s in model.transcribe(str(item.audio), batch_size=8, language="en",
                                                      threads=args.threads, without_timestamps=True,
                                                      condition_on_previous_text=False)[0])
            for item in items)
        wall = time.perf_counter() - start
        counts = align(reference, words(hypothesis)).counts
        print(f"{name:40s} {counts.errors:7d} {counts.reference_length:6d} {100 * counts.error_rate:6.2f} {wall:7.1f}")


if __name__ == "__main__":
    main()
