"""Renderer and captioner of the shapes world defined in tests/data/demo/samples/../SPEC.md."""
import io
import math
import random

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (215, 35, 35), "green": (35, 165, 55), "blue": (40, 75, 215), "yellow": (240, 205, 25)}
COLOUR_NAMES = list(COLOURS)
# Radius of the bounding disc per unit of nominal size s.
DISC = {"circle": 0.5, "square": 0.66, "triangle": 0.6}
SUPERSAMPLE = 4


def shape_points(shape, cx, cy, s, angle_deg):
    """Polygon vertices (picture coordinates) of a square or an up-pointing equilateral triangle
    centred (centroid) at (cx, cy), rotated by angle_deg."""
    if shape == "square":
        half = 0.45 * s
        pts = [(-half, -half), (half, -half), (half, half), (-half, half)]
    else:
        r = s / math.sqrt(3)  # circumradius of an equilateral triangle of side s
        pts = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in (-90, 30, 150)]
    c, sn = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return [(cx + x * c - y * sn, cy + x * sn + y * c) for x, y in pts]


def extent(item):
    """Half extents (x, y) of the drawn shape around its centre."""
    if item["shape"] == "circle":
        r = item["s"] / 2
        return r, r
    pts = shape_points(item["shape"], 0.0, 0.0, item["s"], item["angle"])
    return max(abs(x) for x, _ in pts), max(abs(y) for _, y in pts)


def relation(a, b):
    """Where a's centre lies relative to b's, or None when neither axis dominates by 2x."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if abs(dx) >= 2 * abs(dy) and dx != 0:
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= 2 * abs(dx) and dy != 0:
        return "above" if dy < 0 else "below"
    return None


def order_key(item):
    return SHAPES.index(item["shape"]), COLOUR_NAMES.index(item["colour"])


def caption(items):
    if len(items) == 1:
        it = items[0]
        return f"a {it['colour']} {it['shape']}."
    a, b = sorted(items, key=order_key)
    return f"a {a['colour']} {a['shape']} {relation(a, b)} a {b['colour']} {b['shape']}."


def picture_size(rng):
    r = rng.random()
    if r < 0.30:
        return 224, 224
    if r < 0.45:
        return 320, 160
    if r < 0.60:
        return 160, 320
    while True:
        w, h = rng.randint(85, 480), rng.randint(85, 480)
        if max(w, h) <= 4 * min(w, h):
            return w, h


def jitter(rgb, rng):
    return tuple(max(0, min(255, c + rng.randint(-22, 22))) for c in rgb)


def sample_scene(rng, num_shapes, size=None):
    """Draws a picture description: size, background, shapes (with centres) satisfying the spec."""
    while True:
        w, h = size or picture_size(rng)
        short = min(w, h)
        items = []
        for _ in range(num_shapes):
            lo = max(0.20 * short, 26.0)
            hi = 0.36 * short
            if hi < lo:
                break
            item = {"shape": rng.choice(SHAPES), "colour": rng.choice(COLOUR_NAMES), "s": rng.uniform(lo, hi)}
            item["angle"] = 0.0 if item["shape"] == "circle" else rng.uniform(-12, 12)
            ex, ey = extent(item)
            if 2 * ex + 6 > w or 2 * ey + 6 > h:
                break
            item["cx"] = rng.uniform(ex + 3, w - ex - 3)
            item["cy"] = rng.uniform(ey + 3, h - ey - 3)
            item["rgb"] = jitter(COLOURS[item["colour"]], rng)
            items.append(item)
        if len(items) != num_shapes:
            if size is not None:
                size = None
            continue
        if num_shapes == 2:
            a, b = items
            if a["shape"] == b["shape"] and a["colour"] == b["colour"]:
                continue
            gap = math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) - DISC[a["shape"]] * a["s"] - DISC[b["shape"]] * b["s"]
            if gap < 6 or relation(a, b) is None:
                continue
        if rng.random() < 0.4:
            bg = (255, 255, 255)
        else:
            g = rng.randint(200, 245)
            bg = tuple(g + rng.randint(-3, 3) for _ in range(3))
        jpeg = rng.randint(60, 95) if rng.random() < 0.3 else None
        return {"width": w, "height": h, "background": bg, "shapes": items, "jpeg_quality": jpeg}


def render(scene):
    """Draws each shape at 4x inside its own box, box-downsamples the coverage to an anti-aliased
    mask, and composites the shape colour over the background; optionally JPEG re-encodes."""
    img = Image.new("RGB", (scene["width"], scene["height"]), scene["background"])
    k = SUPERSAMPLE
    for it in scene["shapes"]:
        ex, ey = extent(it)
        x0, y0 = int(math.floor(it["cx"] - ex)) - 1, int(math.floor(it["cy"] - ey)) - 1
        x1, y1 = int(math.ceil(it["cx"] + ex)) + 1, int(math.ceil(it["cy"] + ey)) + 1
        mask = Image.new("L", ((x1 - x0) * k, (y1 - y0) * k), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = (it["cx"] - x0) * k, (it["cy"] - y0) * k
        if it["shape"] == "circle":
            r = it["s"] / 2 * k
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        else:
            draw.polygon(shape_points(it["shape"], cx, cy, it["s"] * k, it["angle"]), fill=255)
        mask = mask.reduce(k)
        img.paste(it["rgb"], (x0, y0, x1, y1), mask)
    if scene["jpeg_quality"]:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=scene["jpeg_quality"])
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


def random_example(rng, num_shapes):
    scene = sample_scene(rng, num_shapes)
    return render(scene), caption(scene["shapes"]), scene


if __name__ == "__main__":
    import sys
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/shapes_preview"
    import os
    os.makedirs(out, exist_ok=True)
    for i in range(12):
        img, cap, _ = random_example(rng, 1 + (i % 2))
        img.save(f"{out}/p{i:02d}.png")
        print(f"p{i:02d}.png", img.size, cap)
