"""One job's work: read the upload, decode it, run the kernels, encode WebP,
write each output atomically. Raises JobError subclasses for every failure a
job can cause; anything else is a bug."""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

import fastimg

from .errors import PermanentError, TransientError
from .jobs import Job
from .outputs import OutputSpec


@dataclass(frozen=True)
class Limits:
    """Inputs beyond these fail at once with reason ``too-large``."""

    max_input_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 120_000_000  # checked from the header, before decoding
    max_frames: int = 2000  # animations: only the first frame is used, but all are scanned


@dataclass
class Output:
    operation: str
    path: str
    bytes: int
    width: int
    height: int


@dataclass
class Result:
    outputs: List[Output] = field(default_factory=list)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    input_bytes: int = 0


def fit_inside(width: int, height: int, box_w: int, box_h: int) -> Tuple[int, int]:
    """Size that fits inside box_w x box_h, aspect kept, never upscaled."""
    scale = min(1.0, box_w / width, box_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class _Clock:
    def __init__(self) -> None:
        self.timings: Dict[str, float] = {}
        self._t = time.perf_counter()

    def add(self, stage: str, ms: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + ms, 2)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.add(stage, (now - self._t) * 1000)
        self._t = now


def read_input(path: str, limits: Limits) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not hang the worker; fstat refuses it next.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TransientError("input-missing", f"input file not found: {path}") from None
    except OSError as e:
        raise TransientError("io-error", f"cannot open input: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermanentError("not-a-file", f"input is not a regular file: {path}")
        if st.st_size > limits.max_input_bytes:
            raise PermanentError("too-large", f"input is {st.st_size} bytes, limit {limits.max_input_bytes}")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    except OSError as e:
        raise TransientError("io-error", f"cannot read input: {e}") from None
    finally:
        if fd >= 0:
            os.close(fd)


IMAGE_TYPES = ("jpeg", "png", "gif", "webp", "bmp", "tiff", "svg")  # the seed server's image MIME types


def detect_image_type(head: bytes) -> Optional[str]:
    """The seed's image type of a file from its first bytes (at least 512 for SVG), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    text = head[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in text:
        return "svg"
    return None


_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    # A grey profile changes tone only, and sRGB has no grey space to map it to.
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGBA" if im.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # a broken profile is ignored, as browsers do


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_SWAPPED_ORDER = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


def _rounded_16bit(data: bytes, im: Image.Image) -> Image.Image:
    """16-bit RGB(A) rounded to 8 bits. Pillow reads such files by keeping each
    sample's high byte (truncation); decoding once more with the byte order
    swapped yields the low bytes, and the two give the full value."""
    if len(im.tile) != 1 or im.mode not in ("RGB", "RGBA"):
        return im
    tile = im.tile[0]
    args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
    rawmode = args[0] if args and isinstance(args[0], str) else ""
    order = rawmode[-3:]
    if order not in _SWAPPED_ORDER:
        return im
    low = Image.open(io.BytesIO(data))
    swapped = rawmode[:-3] + _SWAPPED_ORDER[order]
    new_args = (swapped,) + args[1:] if isinstance(tile.args, tuple) else swapped
    low.tile = [tile._replace(args=new_args)]
    low.load()
    im.load()
    if order == "16N":  # the native read gave low bytes on a little-endian machine: swap roles
        im, low = low, im
    wide = np.asarray(im, dtype=np.uint32) * 256 + np.asarray(low, dtype=np.uint32)
    out = Image.fromarray(((wide * 2 + 257) // 514).astype(np.uint8), im.mode)
    out.info.update(im.info)
    return out


def decode(data: bytes, specs: Sequence[OutputSpec], limits: Limits) -> np.ndarray:
    """Decoded, upright, sRGB pixels: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA."""
    if not data:
        # Most often an upload still being written: retried like a truncated file.
        raise TransientError("corrupt-image", "input file is empty")
    if detect_image_type(data[:4096]) == "svg":
        raise PermanentError("unsupported-format", "SVG images are not rasterised by this worker")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked below, from the header.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            # Decode in one call, not one per 64 KiB: Pillow takes the GIL back
            # between calls, and with another thread busy in Python each
            # return can wait a whole switch interval (a 12 MP decode went
            # from 43 to 266 ms next to a spinning thread; 57 ms with this).
            im.decodermaxblock = min(max(len(data), 65536), 16 << 20)
            width, height = im.size
            if width * height > limits.max_pixels:
                raise PermanentError(
                    "too-large", f"image is {width}x{height} pixels, limit {limits.max_pixels}"
                )
            frames = getattr(im, "n_frames", 1)
            if frames > limits.max_frames:
                raise PermanentError("too-large", f"image has {frames} frames, limit {limits.max_frames}")
            im.seek(0)
            if im.format in ("PNG", "TIFF"):
                im = _rounded_16bit(data, im)  # before getexif(), which loads a PNG
            orientation = im.getexif().get(0x0112, 1)
            if im.format == "JPEG":
                # Shrink-on-load: decode at the smallest DCT scale that still
                # covers every output, sized in the stored orientation.
                swap = orientation in _TRANSPOSED
                sizes = [fit_inside(width, height, *((s.height, s.width) if swap else (s.width, s.height)))
                         for s in specs]
                im.draft(im.mode if im.mode in ("RGB", "L") else None,
                         (max(w for w, _ in sizes), max(h for _, h in sizes)))
            if orientation in range(2, 9):
                im = ImageOps.exif_transpose(im)  # a copy, so only when it turns something
            im = _to_srgb(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I"):
                # 16-bit grey: round to 8 bits rather than clip.
                wide = np.asarray(im, dtype=np.float64)
                return np.clip(np.floor(wide / 257.0 + 0.5), 0, 255).astype(np.uint8)
            mode = "RGBA" if _has_alpha(im) else ("L" if im.mode == "L" else "RGB")
            if im.mode != mode:  # convert() copies even when the mode is already right
                im = im.convert(mode)
            return np.asarray(im)
    except PermanentError:
        raise
    except UnidentifiedImageError:
        raise PermanentError("unsupported-format", "not an image format this worker can read") from None
    except Image.DecompressionBombError as e:
        raise PermanentError("too-large", str(e)) from None
    except MemoryError:
        raise TransientError("out-of-memory", "out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Often a file still being copied: retried (docs/worker.md).
        raise TransientError("corrupt-image", f"cannot decode image: {e}") from None


def render_each(
    pixels: np.ndarray, operations: Sequence[str], spec: Mapping[str, OutputSpec]
) -> Iterator[Tuple[str, np.ndarray]]:
    """(operation, output pixels) for each operation, largest output first, as
    each is ready, from one upload of ``pixels`` to the kernel backend.

    Each output is resized from the smallest resized image already made that
    covers it (thumbnail from the blur's 640, that from the 1280): a cascade of
    antialiased downscales, within 56 dB PSNR of resizing from the original on
    the corpus and 12 MP photos, at a fraction of the work. Largest first also
    means the longest encode can start while the smaller outputs are made."""
    height, width = pixels.shape[:2]
    try:
        src = fastimg.Image(pixels, copy=False)  # pixels are ours and left alone
        sizes = {op: fit_inside(width, height, spec[op].width, spec[op].height) for op in operations}
        resized = {(width, height): src}  # resized images before blur or quantisation
        for op in sorted(operations, key=lambda o: sizes[o][0] * sizes[o][1], reverse=True):
            s, size = spec[op], sizes[op]
            if size not in resized:
                base = min((k for k in resized if k[0] >= size[0] and k[1] >= size[1]), key=lambda k: k[0] * k[1])
                resized[size] = resized[base].resize(size, filter="lanczos3")
            img = resized[size]
            sigma = s.sigma or s.sigma_fraction * max(size)
            if sigma > 0:
                img = img.gaussian_blur(sigma)
            if s.levels:
                img = img.quantize(s.levels, dither=s.dither)
            yield op, img.numpy()
    except MemoryError:
        raise TransientError("out-of-memory", "out of memory in the kernels") from None
    except RuntimeError as e:  # CUDA errors surface as RuntimeError
        raise TransientError("gpu-error", str(e)) from None


def render(pixels: np.ndarray, operations: Sequence[str], spec: Mapping[str, OutputSpec]) -> Dict[str, np.ndarray]:
    """The outputs of each operation (see render_each)."""
    return dict(render_each(pixels, operations, spec))


def encode_webp(pixels: np.ndarray, s: OutputSpec) -> bytes:
    buf = io.BytesIO()
    # Built from bare pixels, so no metadata (EXIF, ICC, XMP) is carried over.
    Image.fromarray(pixels).save(buf, "WEBP", quality=s.quality, method=s.method)
    return buf.getvalue()


def write_atomic(directory: str, name: str, data: bytes) -> str:
    """Write ``data`` to ``directory/name`` so that readers see the old file or the
    whole new one, never a part; a symlink at that name is replaced, not followed."""
    final = os.path.join(directory, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return final


_ENCODERS = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="fastimg-encode")


def _encode_and_write(job: Job, op: str, pixels: np.ndarray, s: OutputSpec) -> Tuple[Output, float, float]:
    t0 = time.perf_counter()
    encoded = encode_webp(pixels, s)
    t1 = time.perf_counter()
    try:
        path = write_atomic(job.output_dir, f"{job.job_id}_{op}.webp", encoded)
    except OSError as e:
        raise TransientError("io-error", f"cannot write output: {e}") from None
    t2 = time.perf_counter()
    h, w = pixels.shape[:2]
    return Output(op, path, len(encoded), w, h), (t1 - t0) * 1000, (t2 - t1) * 1000


def process(
    job: Job,
    limits: Limits = Limits(),
    log: Optional[Callable[[str], None]] = None,
    on_output: Optional[Callable[[str], None]] = None,
) -> Result:
    """Make the outputs of ``job``. ``log`` receives the seed's per-step lines,
    ``on_output`` each operation's name once its file is in place."""
    say = log or (lambda _msg: None)
    clock = _Clock()
    result = Result()
    data = read_input(job.input_path, limits)
    result.input_bytes = len(data)
    say(f"Input image read: {len(data)} bytes")
    clock.lap("read")
    spec = job.spec
    pixels = decode(data, [spec[op] for op in job.operations], limits)
    del data
    clock.lap("decode")
    try:
        os.makedirs(job.output_dir, exist_ok=True)
    except FileExistsError:
        raise PermanentError("not-a-directory", f"outputDir is not a directory: {job.output_dir}") from None
    except OSError as e:
        raise TransientError("io-error", f"cannot create outputDir: {e}") from None
    if not os.path.isdir(job.output_dir):
        raise PermanentError("not-a-directory", f"outputDir is not a directory: {job.output_dir}")
    # Each output is encoded as soon as it is made, on the encoder threads
    # (libwebp runs without the GIL), the largest first: with a second core a
    # job takes about as long as its largest encode plus what comes before it,
    # not the sum of its encodes.
    futures = {}
    try:
        for op, image in render_each(pixels, job.operations, spec):
            futures[_ENCODERS.submit(_encode_and_write, job, op, image, spec[op])] = op
    except BaseException:
        wait(futures)  # nothing of this attempt may still be writing when it is retried
        raise
    del pixels
    clock.lap("kernels")
    made: Dict[str, Output] = {}
    for fut in as_completed(futures):
        output, encode_ms, write_ms = fut.result()
        made[output.operation] = output
        clock.add("encode", encode_ms)
        clock.add("write", write_ms)
        say(f"Operation {output.operation} complete: {output.path} ({output.bytes} bytes)")
        if on_output:
            on_output(output.operation)
    result.outputs = [made[op] for op in job.operations]
    result.timings_ms = clock.timings
    return result
