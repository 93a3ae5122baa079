"""Checks the caption rules against the bundled samples: segments each sample picture into shapes
(colour by nearest base colour, kind by area / (pi * max radius^2)), captions them with
shapes_world.caption and compares with captions.jsonl."""
import json
import math
import os
import sys

import numpy as np
from PIL import Image

from shapes_world import COLOURS, caption



def components(mask):
    labels = np.zeros(mask.shape, dtype=np.int32)
    n = 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        labels[y, x] = n
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = n
                    stack.append((ny, nx))
    return labels, n


def shapes_in(img):
    a = np.asarray(img.convert("RGB")).astype(np.float64)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg = np.median(border, axis=0)
    fg = np.abs(a - bg).max(axis=2) > 60
    labels, n = components(fg)
    items = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        if len(ys) < 30:
            continue
        cy, cx = ys.mean(), xs.mean()
        rmax = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).max() + 0.5
        fill = len(ys) / (math.pi * rmax ** 2)
        kind = "circle" if fill > 0.8 else "square" if fill > 0.52 else "triangle"
        mean = a[ys, xs].mean(axis=0)
        colour = min(COLOURS, key=lambda c: np.sum((np.array(COLOURS[c]) - mean) ** 2))
        items.append({"shape": kind, "colour": colour, "cx": cx, "cy": cy})
    return items


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../../tests/data/demo/samples")
    ok = 0
    lines = [json.loads(line) for line in open(os.path.join(root, "captions.jsonl"))]
    for rec in lines:
        got = caption(shapes_in(Image.open(os.path.join(root, rec["file"]))))
        ok += got == rec["caption"]
        print("ok " if got == rec["caption"] else "BAD", rec["file"], got, "|", rec["caption"])
    print(f"{ok}/{len(lines)} captions agree")


if __name__ == "__main__":
    main()
