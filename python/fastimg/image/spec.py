"""What each operation makes (output spec v1), and how operators and jobs
change it. One schema serves the job's ``params``, the config file and the
``--output`` flags, so all three accept and refuse the same things."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATIONS = ("thumbnail", "blur", "low-quality")


@dataclass(frozen=True)
class OutputSpec:
    width: int  # fit inside width x height, aspect kept, never upscaled
    height: int
    quality: int  # lossy WebP quality 0..100
    method: int = 4  # WebP effort 0 (fast) .. 6 (small)
    sigma: float = 0.0  # Gaussian sigma in output pixels (blur); 0: none
    sigma_fraction: float = 0.0  # ... or as a fraction of the output's longer side
    levels: int = 0  # colour levels per channel (low-quality); 0: none
    dither: bool = False  # ordered dithering when quantising


SPEC_V1: dict[str, OutputSpec] = {
    "thumbnail": OutputSpec(width=320, height=320, quality=80),
    "blur": OutputSpec(width=640, height=640, quality=70, sigma_fraction=0.02),
    "low-quality": OutputSpec(width=1280, height=1280, quality=30, levels=32),
}

# The longest side of an output: WebP's own limit, the most an operator's
# --output or --config may ask.
MAX_OUTPUT_SIDE = 16384
# The most a job's params may ask: an output of 4096x4096 takes about 0.3 GB
# to make, 10000x10000 took 3 GB, and a producer is less trusted than the operator.
MAX_JOB_OUTPUT_SIDE = 4096

# field -> (type, low, high); bool fields have no bounds.
_FIELDS = {
    "width": (int, 1, MAX_OUTPUT_SIDE),
    "height": (int, 1, MAX_OUTPUT_SIDE),
    "quality": (int, 0, 100),
    "method": (int, 0, 6),
    "sigma": (float, 0.0, 1000.0),
    "levels": (int, 2, 256),
    "dither": (bool, None, None),
}
_ALLOWED = {
    "thumbnail": ("width", "height", "quality", "method"),
    "blur": ("width", "height", "quality", "method", "sigma"),
    "low-quality": ("width", "height", "quality", "method", "levels", "dither"),
}


def fit_inside(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """Size that fits inside box_w x box_h, aspect kept, never upscaled."""
    scale = min(1.0, box_w / width, box_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class SpecError(ValueError):
    """A bad override; the message names the field, as ``params.blur.sigma``."""


def _value(where: str, name: str, value: Any, max_side: int) -> Any:
    kind, low, high = _FIELDS[name]
    if name in ("width", "height"):
        high = max_side
    if kind is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}.{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(f"{where}.{name} must be a number")
    if kind is int and value != int(value):  # type: ignore[call-overload]  # every Real has __int__
        raise SpecError(f"{where}.{name} must be an integer")
    value = kind(value)
    if not low <= value <= high or (name == "sigma" and value <= 0):
        bound = f"> 0 and <= {high:g}" if name == "sigma" else f"in {low}..{high}"
        raise SpecError(f"{where}.{name} must be {bound}, got {value!r}")
    return value


def apply_overrides(
    spec: Mapping[str, OutputSpec], overrides: Any, where: str = "params", max_side: int = MAX_OUTPUT_SIDE
) -> dict[str, OutputSpec]:
    """``spec`` with ``overrides`` ({operation: {field: value}}) applied, after
    checking them; ``width`` and ``height`` at most ``max_side``."""
    if not isinstance(overrides, Mapping):
        raise SpecError(f"{where} must be an object")
    out = dict(spec)
    for op, fields in overrides.items():
        if op not in _ALLOWED:
            raise SpecError(f"{where}: unknown operation {op!r} (known: {', '.join(OPERATIONS)})")
        if not isinstance(fields, Mapping):
            raise SpecError(f"{where}.{op} must be an object")
        changes = {}
        for name, value in fields.items():
            if name not in _ALLOWED[op]:
                raise SpecError(f"{where}.{op}: unknown field {name!r} (known: {', '.join(_ALLOWED[op])})")
            changes[name] = _value(f"{where}.{op}", name, value, max_side)
        if "sigma" in changes:
            changes["sigma_fraction"] = 0.0  # an explicit sigma replaces the relative one
        out[op] = dataclasses.replace(out[op], **changes)
    return out


def parse_assignment(text: str) -> dict[str, dict[str, Any]]:
    """``thumbnail.quality=75`` as an override mapping, for the ``--output`` flag."""
    key, sep, raw = text.partition("=")
    op, dot, name = key.partition(".")
    if not sep or not dot:
        raise SpecError(f"--output takes OPERATION.FIELD=VALUE, got {text!r}")
    value: Any
    if raw in ("true", "false"):
        value = raw == "true"
    else:
        try:
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            raise SpecError(f"--output {key}: {raw!r} is not a number") from None
    return {op: {name: value}}
