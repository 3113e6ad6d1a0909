"""The SVG renderers the worker could use, side by side: time and peak memory
per drawing rendered to fit 1280x1280, and what each does with the hostile
references an upload can hold (a local file by absolute, relative or file://
path, an http URL, an entity bomb).

    pip install resvg-py cairosvg
    python bench/svg_renderers.py [--repeat 5]

Each render runs in a fresh child process, so peak RSS is the render's."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from PIL import Image

HEAD = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" height="{h}">'


def drawings() -> dict[str, str]:
    r = random.Random(7)

    def polygon(size: float) -> str:
        x, y = r.uniform(0, 800 - size), r.uniform(0, 600 - size)
        points = " ".join(f"L{x + r.uniform(0, size):.1f} {y + r.uniform(0, size):.1f}" for _ in range(8))
        return f'<path d="M{x:.1f} {y:.1f} {points} Z" fill="#{r.randrange(1 << 24):06x}" fill-opacity="0.5"/>'

    small = "".join(polygon(40) for _ in range(2000))  # an illustration: many small shapes
    large = "".join(polygon(600) for _ in range(200))  # few shapes, each across most of the canvas
    gradients = (
        '<defs><radialGradient id="g"><stop offset="0" stop-color="gold"/><stop offset="1" stop-color="navy"/>'
        '</radialGradient><filter id="b"><feGaussianBlur stdDeviation="6"/></filter></defs>'
        + "".join(
            f'<circle cx="{400 + 300 * math.cos(i / 10):.1f}" cy="{300 + 200 * math.sin(i / 7):.1f}" r="40" '
            f'fill="url(#g)" filter="url(#b)"/>'
            for i in range(200)
        )
    )
    line = '<text x="10" y="{}" font-size="16">Line {}: the quick brown fox</text>'
    text = "".join(line.format(20 + 18 * i, i) for i in range(30))
    return {
        "2000 small polygons": HEAD.format(w=800, h=600) + small + "</svg>",
        "200 large polygons": HEAD.format(w=800, h=600) + large + "</svg>",
        "200 blurred gradients": HEAD.format(w=800, h=600) + gradients + "</svg>",
        "30 lines of text": HEAD.format(w=800, h=600) + text + "</svg>",
    }


def hostile(secret_png: str) -> dict[str, str]:
    image = '<image href="{}" width="100" height="50"/>'
    entities = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10 if i else "x" * 10}">' for i in range(8))
    return {
        "absolute path": HEAD.format(w=100, h=50) + image.format(secret_png) + "</svg>",
        "relative path": HEAD.format(w=100, h=50) + image.format(os.path.basename(secret_png)) + "</svg>",
        "file:// URL": HEAD.format(w=100, h=50) + image.format("file://" + secret_png) + "</svg>",
        "http URL": HEAD.format(w=100, h=50) + image.format("http://127.0.0.1:9/x.png") + "</svg>",
        "entity bomb": f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]>'
        + HEAD.format(w=100, h=50)
        + "<text>&e7;</text></svg>",
    }


def render(renderer: str, svg: str, width: int) -> bytes:
    if renderer == "resvg-py":
        import resvg_py

        return bytes(resvg_py.svg_to_bytes(svg_string=svg, width=width))
    import cairosvg

    return bytes(cairosvg.svg2png(bytestring=svg.encode(), output_width=width))


def child(renderer: str, svg: str, width: int) -> None:
    t = time.perf_counter()
    try:
        png = render(renderer, svg, width)
        im = Image.open(io.BytesIO(png)).convert("RGBA")
        result = {"size": im.size, "drawn": im.getextrema()[3][1] > 0}
    except Exception as e:  # noqa: BLE001 - reported
        result = {"error": f"{type(e).__name__}: {e}"[:80]}
    result["ms"] = (time.perf_counter() - t) * 1000
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run(renderer: str, svg: str, width: int, cwd: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", renderer, str(width)],
        input=svg,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {"error": out.stderr[-80:]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--child", nargs=2, metavar=("RENDERER", "WIDTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], sys.stdin.read(), int(args.child[1]))
        return
    renderers = [name for name, mod in (("resvg-py", "resvg_py"), ("cairosvg", "cairosvg")) if _have(mod)]
    with tempfile.TemporaryDirectory() as d:
        print("| drawing | " + " | ".join(f"{r} ms (median) / peak RSS" for r in renderers) + " |")
        print("|---|" + "---|" * len(renderers))
        for name, svg in drawings().items():
            cells = []
            for r in renderers:
                runs = [run(r, svg, 1280, d) for _ in range(args.repeat)]
                ms = sorted(x.get("ms", float("nan")) for x in runs)[len(runs) // 2]
                cells.append(f"{ms:.0f} ms / {max(x.get('rss_mb', 0) for x in runs):.0f} MB")
            print(f"| {name} | " + " | ".join(cells) + " |")
        secret = os.path.join(d, "secret.png")
        Image.new("RGB", (10, 10), (255, 0, 0)).save(secret)
        print()
        print("| hostile reference | " + " | ".join(renderers) + " |")
        print("|---|" + "---|" * len(renderers))
        for name, svg in hostile(secret).items():
            cells = []
            for r in renderers:
                x = run(r, svg, 100, d)
                cells.append(x.get("error") or ("loaded it" if x.get("drawn") else "ignored it"))
            print(f"| {name} | " + " | ".join(cells) + " |")


def _have(module: str) -> bool:
    try:
        __import__(module)
    except (ImportError, OSError):
        return False
    return True


if __name__ == "__main__":
    main()
