"""Turn a long-form speech set into a dataset manifest (the format of ../shared/data) for eval_wer.py.

    python scripts/prepare_data.py tedlium  TEDLIUM_release-3/legacy/test  data/tedlium3-test
    python scripts/prepare_data.py earnings speech-datasets/earnings21      data/earnings21
    python scripts/prepare_data.py librispeech LibriSpeech/test-clean        data/librispeech-test-clean-chapters
    python scripts/prepare_data.py folder   my_recordings                    data/mine
    python scripts/prepare_data.py hf distil-whisper/earnings22 data/e22 --config chunked --split test --limit 5

Then: python scripts/eval_wer.py dataset=custom dataset.name=<name> dataset.manifest=<out_dir>/manifest.jsonl
"""

from __future__ import annotations

import argparse
import sys

from unique_asr.errors import UniqueASRError
from unique_asr.eval import prepare


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="source", required=True)
    for name, what in (
        ("tedlium", "TED-LIUM 3 split folder (stm/, sph/)"),
        ("earnings", "Earnings-21/22 folder (.nlp references, wer_tag json, mp3)"),
        ("librispeech", "LibriSpeech split folder: chapters joined into long files"),
        ("folder", "any folder of audio files with same-named .txt transcripts"),
    ):
        s = sub.add_parser(name, help=what)
        s.add_argument("root", help="input folder")
        s.add_argument("out_dir", help="where manifest.jsonl (and any written audio) go")
        if name == "librispeech":
            s.add_argument("--gap", type=float, default=0.5, help="seconds of silence between utterances")
        if name == "earnings":
            s.add_argument(
                "--entity-classes",
                nargs="+",
                default=list(prepare.NAMED_ENTITY_CLASSES),
                help="entity classes kept in each line's 'entities' (for the entity error rate)",
            )
    hf = sub.add_parser(
        "hf", help="a Hugging Face dataset id (needs `datasets` and the network or its cache)"
    )
    hf.add_argument("dataset_id")
    hf.add_argument("out_dir")
    hf.add_argument("--config", default=None)
    hf.add_argument("--split", default="test")
    hf.add_argument("--audio-column", default="audio")
    hf.add_argument("--text-column", default="text")
    hf.add_argument("--id-column", default=None)
    hf.add_argument("--limit", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.source == "tedlium":
            path = prepare.prepare_tedlium(args.root, args.out_dir)
        elif args.source == "earnings":
            path = prepare.prepare_earnings(args.root, args.out_dir, args.entity_classes)
        elif args.source == "librispeech":
            path = prepare.prepare_librispeech(args.root, args.out_dir, args.gap)
        elif args.source == "folder":
            path = prepare.prepare_folder(args.root, args.out_dir)
        else:
            path = prepare.prepare_hf(
                args.dataset_id,
                args.out_dir,
                args.split,
                args.config,
                args.audio_column,
                args.text_column,
                args.id_column,
                args.limit,
            )
    except UniqueASRError as exc:
        print(f"prepare_data: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
