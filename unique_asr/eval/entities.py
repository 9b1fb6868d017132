"""Entity error rate: 1 - recall of the listed named-entity mentions found verbatim in the hypothesis.

Both the entity and the hypothesis go through the same normaliser; an entity counts as found when its
normalised words occur as a contiguous run of the normalised hypothesis. A file that lists a mention
c times gets credit for at most min(c, occurrences in the hypothesis).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from unique_asr.errors import UniqueASRError


def load_entities(path: str | Path) -> dict[str, list[str]]:
    """Entity lists by file id from JSONL lines {"id": ..., "entities": [mention, ...]}."""
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.setdefault(str(row["id"]), []).extend(str(e) for e in row["entities"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UniqueASRError(
                    f"{path}:{lineno}: expected {{'id': ..., 'entities': [...]}} ({exc})"
                ) from exc
    return out


def _occurrences(phrase: str, text: str) -> int:
    return len(re.findall(rf"(?<!\S){re.escape(phrase)}(?!\S)", text))


def entity_hits(
    entities: Iterable[str], hyp_normalised: str, normalise: Callable[[str], str]
) -> tuple[int, int]:
    """(mentions found, mentions listed) of `entities` in a normalised hypothesis.

    Mentions that normalise to nothing (e.g. pure punctuation) are not counted.
    """
    listed = Counter(" ".join(normalise(e).split()) for e in entities)
    listed.pop("", None)
    text = " ".join(hyp_normalised.split())
    found = sum(min(c, _occurrences(e, text)) for e, c in listed.items())
    return found, sum(listed.values())
