"""Launch configs of our kernels from the command line (and the decode shape the kernel scripts share): grids for
scripts/sweep_launch.py and single points for scripts/bench_kernels.py, over `SelectConfig` (page selection, a
frozen dataclass) and `DecodeConfig` (the sparse and dense attention kernels, a NamedTuple). One parser, so a
sweep's winner is written the same way when a benchmark runs it.

A grid is `field=v1,v2 field=v1`: the cartesian product of the listed values over a base config (`none` for
None, `true` / `false`, integers); a point is the same with one value per field.
"""

from __future__ import annotations

import dataclasses
import itertools


def parse_value(text: str):
    if text.lower() == "none":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text)


def fields_of(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set(cls._fields)


def parse_grid(words: list[str], fields: set[str], what: str) -> list[dict]:
    """['a=1,2', 'b=none'] -> [{'a': 1, 'b': None}, {'a': 2, 'b': None}]; unknown fields are an error."""
    axes = {}
    for word in words:
        name, sep, values = word.partition("=")
        if not sep or not values:
            raise SystemExit(f"{what}: expected field=v1,v2, got {word!r}")
        if name not in fields:
            raise SystemExit(f"{what}: unknown field {name!r} (one of {', '.join(sorted(fields))})")
        try:
            axes[name] = [parse_value(v) for v in values.split(",")]
        except ValueError:
            raise SystemExit(f"{what}: {name} takes integers, true/false or none, got {values!r}") from None
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def configs(grids: list[list[str]], cls, what: str) -> list[dict]:
    """The union of the grids' points as field dicts, the default ({}) first, duplicates dropped."""
    out = [{}]
    for words in grids:
        for point in parse_grid(words, fields_of(cls), what):
            if point not in out:
                out.append(point)
    return out


def build(base, point: dict, what: str):
    """`base` with the point's fields replaced; a value the config refuses is a clean exit, not a traceback."""
    try:
        return dataclasses.replace(base, **point) if dataclasses.is_dataclass(base) else base._replace(**point)
    except ValueError as exc:
        raise SystemExit(f"{what}: {label(point)}: {exc}") from None


def one_config(words: list[str], base, what: str):
    """The single config `field=v ...` (one value each) over `base`."""
    points = parse_grid(words, fields_of(type(base)), what)
    if len(points) != 1:
        raise SystemExit(f"{what}: one value per field, got {' '.join(words)}")
    return build(base, points[0], what)


def label(point: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()) or "default"


def add_decode_shape(p) -> None:
    """The attention shape options of the kernel scripts (bench_kernels, sweep_launch, profile_select): a
    Llama-style GQA layer (32 query heads, 8 KV heads, head_dim 128), page size 8, budget 512 tokens."""
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--page-size", type=int, default=8)
    p.add_argument("--budget", type=int, default=512)
