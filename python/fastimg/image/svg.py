"""SVG uploads, rendered safely (docs/outputs.md, "SVG").

Before any renderer sees a file, expat reads it here: an external entity, an
entity expansion of more than ``MAX_ENTITY_CHARS``, or a reference to
anything but the file's own elements (``#id``) or inline ``data:`` is
refused. The renderer (resvg, which runs no script and fetches nothing over
a network) then runs in a child process that holds its own address-space,
CPU-time and file-size limits, in an empty directory, at the size of the
largest output: never larger than the intrinsic size from width/height or
the viewBox, and never larger than the operator's largest output."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np
from PIL import Image

from .errors import PermanentError, TransientError

MAX_ENTITY_CHARS = 1 << 20  # what entities may add to the file's text, declared and where used
RENDER_MEMORY = 1 << 30  # the child's address space
RENDER_SECONDS = 20  # the child's CPU time; the wall-clock wait is twice that
_CHILD = Path(__file__).with_name("svg_child.py")
_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.IGNORECASE)
_UNITS = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*$")


def _local(reference: str) -> bool:
    """Whether a reference stays inside the upload: a fragment or inline data."""
    target = reference.strip()
    return target.startswith("#") or target.lower().startswith("data:")


def _outside(what: str) -> PermanentError:
    why = f"SVG refers to {what!r}, outside the upload (only #id and data: are read)"
    return PermanentError("unsupported-format", why)


@dataclass
class _Reader:
    """expat's handlers: what the root says about size, and the refusals."""

    limit: int  # characters of text and attribute values, entities expanded
    root: dict[str, str] | None = None
    in_style: int = 0
    entity_chars: int = 0
    chars: int = 0

    def __post_init__(self) -> None:
        self.expanded: dict[str, int] = {}

    def entity(self, name: str, _param: int, value: str | None, _b: object, system: str | None, *_: object) -> None:
        if value is None:
            raise _outside(system or name)  # an external entity, parsed or not
        size = len(value) + sum(self.expanded.get(ref, 0) - len(ref) - 2 for ref in re.findall(r"&([^;&\s]+);", value))
        self.expanded[name] = size
        self.entity_chars += size
        if self.entity_chars > MAX_ENTITY_CHARS:
            raise PermanentError("too-large", f"SVG entities expand to more than {MAX_ENTITY_CHARS} characters")

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(" ")[2]  # namespaces arrive as "URI local"
        if self.root is None:
            if local != "svg":
                raise PermanentError("unsupported-format", f"the root element is {local!r}, not svg")
            self.root = {k.rpartition(" ")[2]: v for k, v in attrs.items()}
        self.in_style += local == "style"
        for key, value in attrs.items():
            if key.rpartition(" ")[2] == "href" and not _local(value):
                raise _outside(value)
            self.count(value)
            self.text(value)

    def end(self, name: str) -> None:
        self.in_style -= name.rpartition(" ")[2] == "style"

    def count(self, data: str) -> None:
        self.chars += len(data)
        if self.chars > self.limit:  # entities used many times over: expat expands them as it goes
            raise PermanentError("too-large", f"SVG entities expand to more than {MAX_ENTITY_CHARS} characters")

    def character_data(self, data: str) -> None:
        self.count(data)
        if self.in_style:
            self.text(data)

    def text(self, data: str) -> None:
        for target in _URL.findall(data):
            if target and not _local(target):
                raise _outside(target)
        if "@import" in data.lower():
            raise _outside("@import")


def _length(text: str | None) -> float | None:
    m = _LENGTH.match(text or "")
    if not m or m.group(2) not in _UNITS:
        return None  # a percentage or a font-relative unit: the viewBox decides
    return float(m.group(1)) * _UNITS[m.group(2)]


def intrinsic_size(data: bytes) -> tuple[float, float]:
    """The drawing's size in CSS pixels (width/height, else the viewBox, else
    100x100, as resvg takes it) after the checks above; raises JobError."""
    reader = _Reader(limit=len(data) + MAX_ENTITY_CHARS)
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = reader.entity
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.character_data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        # Most often an upload still arriving: retried like any truncated file.
        raise TransientError("corrupt-image", f"cannot parse the SVG: {e}") from None
    root = reader.root or {}
    try:
        box = [float(v) for v in re.split(r"[\s,]+", root.get("viewBox", "").strip()) if v][:4]
    except ValueError:
        box = []  # a viewBox that is not four numbers is ignored, as renderers ignore it
    width, height = _length(root.get("width")), _length(root.get("height"))
    if len(box) == 4 and box[2] > 0 and box[3] > 0:
        ratio = box[2] / box[3]
        width, height = width or (height * ratio if height else box[2]), height or (width / ratio if width else box[3])
    width, height = width or 100.0, height or 100.0
    if not (0 < width < 1e9 and 0 < height < 1e9):
        raise PermanentError("too-large", f"SVG size {width:g}x{height:g} is not drawable")
    return width, height


def render(data: bytes, width: int, height: int) -> np.ndarray:
    """(height, width, 4) RGBA pixels of the checked drawing, rendered in a limited child process."""
    with tempfile.TemporaryDirectory(prefix="fastimg-svg-") as empty:
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(_CHILD), str(width), str(height), str(RENDER_MEMORY), str(RENDER_SECONDS)],
                input=data,
                capture_output=True,
                cwd=empty,  # nothing a relative path could reach
                env={"PATH": os.defpath, "HOME": empty},
                timeout=2 * RENDER_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PermanentError("too-large", f"rendering the SVG took over {2 * RENDER_SECONDS} s") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        if done.returncode < 0 or "MemoryError" in why[0]:
            raise PermanentError("too-large", f"rendering the SVG exceeded its limits ({why[0]})")
        raise PermanentError("unsupported-format", f"cannot render the SVG: {why[0]}")
    with Image.open(io.BytesIO(done.stdout), formats=["PNG"]) as im:
        pixels = np.asarray(im.convert("RGBA"))
    return pixels
