"""What the damage checks (fastimg/image/damage.py) cost beside a whole
decode, on a generated 12 MP photo saved as JPEG (quality 90) and PNG:

    python bench/damage_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

from conftest import make_12mp
from PIL import Image

from fastimg.image.damage import jpeg_damage, png_damage
from fastimg.image.decode import decode
from fastimg.image.spec import SPEC_V1


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[repeat // 2] * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    photo = Image.fromarray(make_12mp())
    specs = list(SPEC_V1.values())
    print("| input | bytes | decode (check included) | check alone |")
    print("|---|---|---|---|")
    for fmt, check, kw in (("JPEG", jpeg_damage, {"quality": 90}), ("PNG", png_damage, {})):
        buf = io.BytesIO()
        photo.save(buf, fmt, **kw)
        data = buf.getvalue()
        whole = median_ms(lambda data=data: decode(data, specs), args.repeat)
        alone = median_ms(lambda data=data, check=check: check(data), args.repeat)
        print(f"| 12 MP {fmt} | {len(data):,} | {whole:.0f} ms | {alone:.0f} ms |")


if __name__ == "__main__":
    main()
