"""Reading JSONL manifests (no dependency beyond the standard library: the corpus job and the evaluation tools
share it, and the corpus job must run on a base install without the [eval] extra)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from unique_asr.errors import UniqueASRError


def read_jsonl(path: str | Path, skip_bad_last_line: bool = False) -> Iterator[dict]:
    """JSON objects of a JSONL file; a malformed line raises UniqueASRError naming it, except a torn last line
    when allowed."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            if skip_bad_last_line and not any(rest.strip() for rest in lines[lineno:]):
                return
            raise UniqueASRError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from exc
