"""Renders one checked SVG (stdin) to PNG (stdout) with resvg, under the
limits it is given: run by fastimg.image.svg as a script, never imported, so
that a fault in the native renderer ends this process only.

    python -I svg_child.py WIDTH HEIGHT MAX_BYTES MAX_CPU_SECONDS < drawing.svg > drawing.png
"""

import os
import resource
import sys


def main() -> int:
    width, height, memory, seconds = (int(a) for a in sys.argv[1:5])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # writes no file
    svg = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    import resvg_py  # after the limits: loading it is part of what they bound

    # dpi 96: the CSS pixel, which physical units (in, mm, pt) are converted with here and in svg.py.
    png = resvg_py.svg_to_bytes(svg_string=svg, width=width, height=height, dpi=96.0, resources_dir=os.getcwd())
    sys.stdout.buffer.write(bytes(png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
