"""Command-line building blocks shared by every `gpu-image-worker` command:
option types and the options that change what is made."""

from __future__ import annotations

import argparse
import json
import math

from ..image.limits import Limits
from ..image.spec import SPEC_V1, OutputSpec, apply_overrides, parse_assignment


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``800000k`` or plain bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    value = float(number) * mult
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"not a size: {text!r}")
    return int(value)


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M)") from None


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def input_formats(text: str) -> tuple[str, ...]:
    from ..image.formats import parse_input_formats

    try:
        return parse_input_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_output_options(p: argparse.ArgumentParser) -> None:
    """Options that change what is made, shared by the worker and `process`."""
    p.add_argument(
        "--input-formats",
        type=input_formats,
        default=Limits.input_formats,
        metavar="LIST",
        help=f"accept inputs in these formats, comma-separated (default {','.join(Limits.input_formats)}; "
        "docs/outputs.md); others fail with unsupported-format before any decoder reads them",
    )
    p.add_argument(
        "--keep-partial",
        action="store_true",
        help="make outputs from damaged image data (cut short, corrupt) instead of failing with corrupt-image; "
        "the outcome says the image is damaged (a job's keepPartial wins)",
    )
    p.add_argument(
        "--max-frames",
        type=positive_int,
        default=Limits.max_frames,
        metavar="N",
        help=f"refuse animations with more frames as too-large (default {Limits.max_frames})",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help='JSON file: {"outputs": {OPERATION: {FIELD: VALUE}}}, the same fields as a '
        "job's params; changes the defaults of output spec v1",
    )
    p.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="OP.FIELD=VALUE",
        help="change one default, e.g. thumbnail.quality=75 or blur.sigma=8 (repeatable; applied after --config)",
    )


def output_spec(args: argparse.Namespace) -> dict[str, OutputSpec]:
    """Output spec v1 with the --config file and --output flags applied."""
    spec = dict(SPEC_V1)
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"--config {args.config}: {e}") from None
        if not isinstance(doc, dict) or set(doc) - {"outputs"}:
            raise ValueError(f'--config {args.config}: expected {{"outputs": {{...}}}}')
        spec = apply_overrides(spec, doc.get("outputs", {}), where="outputs")
    for text in args.output:
        spec = apply_overrides(spec, parse_assignment(text), where="--output")
    return spec
