"""MllamaImageProcessor (transformers 4.45) for one image per prompt: tiled-canvas choice, PIL
bilinear resize on uint8, zero padding right/bottom, rescale + normalize, row-major tiles."""
import math

import numpy as np
from PIL import Image


def supported_aspect_ratios(max_image_tiles):
    return [(w, h) for w in range(1, max_image_tiles + 1) for h in range(1, max_image_tiles + 1)
            if w * h <= max_image_tiles]


def optimal_canvas(height, width, max_image_tiles, tile):
    canvases = np.array(supported_aspect_ratios(max_image_tiles)) * tile
    th, tw = canvases.T
    scale_h, scale_w = th / height, tw / width
    scales = np.where(scale_w > scale_h, scale_h, scale_w)
    up = scales[scales >= 1]
    chosen = np.min(up) if len(up) else np.max(scales[scales < 1])
    cands = canvases[scales == chosen]
    best = cands[np.argmin(cands[:, 0] * cands[:, 1])]
    return int(best[0]), int(best[1])


def fit_to_canvas(height, width, canvas_h, canvas_w, tile):
    target_w = int(np.clip(width, tile, canvas_w))
    target_h = int(np.clip(height, tile, canvas_h))
    scale_h, scale_w = target_h / height, target_w / width
    if scale_w < scale_h:
        return min(math.floor(height * scale_w) or 1, target_h), target_w
    return target_h, min(math.floor(width * scale_h) or 1, target_w)


class MllamaImageProcessor:
    def __init__(self, cfg):
        self.tile = cfg["size"]["height"]
        self.max_tiles = cfg["max_image_tiles"]
        self.mean = np.array(cfg["image_mean"], dtype=np.float32)
        self.std = np.array(cfg["image_std"], dtype=np.float32)
        self.rescale = cfg["rescale_factor"]
        self.ratios = supported_aspect_ratios(self.max_tiles)

    def __call__(self, img):
        """Returns pixel_values (max_tiles, 3, tile, tile) f32, aspect_ratio_id, aspect_ratio_mask
        (max_tiles,) and num_tiles."""
        img = img.convert("RGB")
        w, h = img.size
        ch, cw = optimal_canvas(h, w, self.max_tiles, self.tile)
        nh, nw = fit_to_canvas(h, w, ch, cw, self.tile)
        resized = np.asarray(img.resize((nw, nh), resample=Image.BILINEAR), dtype=np.uint8)
        canvas = np.zeros((ch, cw, 3), dtype=np.uint8)
        canvas[:nh, :nw] = resized
        # HF rescales in float64-ish numpy then casts to float32; normalize in float32.
        x = (canvas.astype(np.float32) * np.float32(self.rescale) - self.mean) / self.std
        rows, cols = ch // self.tile, cw // self.tile
        tiles = x.reshape(rows, self.tile, cols, self.tile, 3).transpose(0, 2, 4, 1, 3).reshape(rows * cols, 3, self.tile, self.tile)
        pixel_values = np.zeros((self.max_tiles, 3, self.tile, self.tile), dtype=np.float32)
        pixel_values[:rows * cols] = tiles
        mask = np.zeros(self.max_tiles, dtype=np.int64)
        mask[:rows * cols] = 1
        return pixel_values, self.ratios.index((rows, cols)) + 1, mask, rows * cols
