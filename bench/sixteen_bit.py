"""The worker's 16-bit decode against libvips' full 16-bit read rounded the same
way (round(v / 257)), over every 16-bit file of the given directories:

    python bench/sixteen_bit.py /work/corpora/pngsuite /work/corpora/pillow ...

Prints the largest difference per file, over pixels with alpha >= 8/255 for
images with alpha (where straight colour is meaningful). Files with an ICC
profile are left out (the worker converts them to sRGB). Needs pyvips."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyvips

from fastimg.image.decode import decode
from fastimg.image.errors import JobError
from fastimg.image.limits import Limits
from fastimg.image.spec import SPEC_V1


def vips16(path: Path) -> np.ndarray:
    v = pyvips.Image.new_from_file(str(path), fail_on="error")
    if v.interpretation == "cmyk" or v.format != "ushort":
        raise ValueError("not 16-bit RGB or grey")
    if "icc-profile-data" in v.get_fields():
        raise ValueError("has an ICC profile, which the worker converts and this read does not")
    wide = np.ndarray(buffer=v.write_to_memory(), dtype=np.uint16, shape=(v.height, v.width, v.bands))
    out = np.floor(wide / 257 + 0.5)
    if out.shape[2] == 2:  # grey+alpha -> RGBA, as the worker gives it
        out = np.dstack([out[..., 0]] * 3 + [out[..., 1]])
    return out


def main(dirs: list) -> int:
    worst = 0.0
    for path in sorted(p for d in dirs for p in Path(d).rglob("*") if p.is_file()):
        try:
            want = vips16(path)
        except (pyvips.Error, ValueError):
            continue
        try:
            got = decode(path.read_bytes(), [SPEC_V1["low-quality"]], Limits(max_pixels=1 << 30)).astype(np.float64)
        except JobError as e:
            print(f"{path}\trefused\t{e.reason}")
            continue
        got = got[..., None] if got.ndim == 2 else got
        if got.shape != want.shape:
            print(f"{path}\tshape\t{got.shape} vs {want.shape}")
            continue
        diff = np.abs(got - want)
        if got.shape[2] == 4:
            diff = diff[want[..., 3] >= 8]
        off = float(diff.max()) if diff.size else 0.0
        worst = max(worst, off)
        print(f"{path}\t{off:.0f}")
    print(f"largest difference: {worst:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
