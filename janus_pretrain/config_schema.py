"""How a typed config file becomes dataclasses: YAML parsing, checked building, float ranges.

Shared by the run config (config.py), the model config (model_config.py, which exports carry
without the rest) and other typed YAML files (evaluation suites). Errors are ConfigError with a
message naming the key and the file.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml


class _YamlLoader(yaml.SafeLoader):
    """safe_load, but '1e-3' is a float (YAML 1.1 wants '1.0e-3' and would return a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def safe_load_yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error as one line ("line 26, column 7: while scanning a simple key, could not find
    expected ':'"); PyYAML's own str() spreads it over several lines with the offending text."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    words = [w for w in (getattr(exc, "context", None), getattr(exc, "problem", None)) if w]
    what = ", ".join(words) if words else " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark is not None else what


class ConfigError(ValueError):
    """A configuration problem the user can fix: the message names the key and the file."""


@dataclass(frozen=True)
class Range:
    """Allowed values of a float key; every float key must also be finite (YAML has .nan and .inf)."""
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False  # True: `low` itself is not allowed
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        return ((self.low < value if self.open_low else self.low <= value)
                and (value < self.high if self.open_high else value <= self.high))

    def __str__(self) -> str:
        low = "(" if self.open_low or self.low == -math.inf else "["
        return f"{low}{self.low:g}, {self.high:g}{')' if self.open_high or self.high == math.inf else ']'}"


POSITIVE, NON_NEGATIVE = Range(0.0, open_low=True), Range(0.0)
FRACTION, OPEN_FRACTION = Range(0.0, 1.0), Range(0.0, 1.0, open_high=True)


def check_floats(section: Any, name: str, where: str) -> None:
    """Every float of a config section (alone, in a list or a dict) is finite and in the section's
    FLOAT_RANGES; a NaN would otherwise pass every `x < 0` check and poison the run later."""
    ranges = getattr(section, "FLOAT_RANGES", {})
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        items = (value.items() if isinstance(value, dict) else
                 ((f"[{i}]", v) for i, v in enumerate(value)) if isinstance(value, list) else [("", value)])
        for suffix, item in items:
            if not isinstance(item, float):
                continue
            key = f"{name}.{f.name}" + (suffix if not isinstance(value, dict) else f".{suffix}")
            allowed = ranges.get(f.name, Range())
            if not math.isfinite(item) or item not in allowed:
                raise ConfigError(f"{where}: {key}={item} must be a finite number in {allowed}; change {key}")


def check_int_limits(section: Any, name: str, where: str) -> None:
    """Every int key in the section's INT_LIMITS is at most its limit: sizes no run can use (a
    1e21-token batch, 100,000 layers) are refused at load, before anything is built or allocated.
    docs/training.md lists the limits."""
    for key, limit in getattr(section, "INT_LIMITS", {}).items():
        value = getattr(section, key)
        if isinstance(value, int) and value > limit:
            raise ConfigError(f"{where}: {name}.{key}={value} is above its limit {limit:,} (docs/training.md, "
                              f"'Limits'); change {name}.{key}")


def check_value(value: Any, tp: Any, key: str, where: str) -> Any:
    """Return `value` converted to type `tp`, or raise ConfigError naming key and file."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
        return build_section(tp, value, key, where)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else check_value(value, args[0], key, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
        (inner,) = typing.get_args(tp)
        return [check_value(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
        _, inner = typing.get_args(tp)
        return {str(k): check_value(v, inner, f"{key}.{k}", where) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{where}: '{key}' must be {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def build_section(cls: type, raw: dict, prefix: str, where: str):
    """An instance of dataclass `cls` from a mapping; unknown keys and wrong types are ConfigErrors
    naming `prefix.key` and `where` (the file). Other typed YAML files (evaluation suites) use it too."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{full}' (known: {', '.join(sorted(names))})")
        kwargs[key] = check_value(value, hints[key], full, where)
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """Plain-dict form of any config dataclass (for JSON, checkpoints and config.json)."""
    return dataclasses.asdict(config)
