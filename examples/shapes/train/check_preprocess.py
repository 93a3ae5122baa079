"""Checks preprocess.py against the transformers reference in tests/data/golden/preprocess."""
import json
import os
import sys

import numpy as np
from PIL import Image

import safetensors_io
from preprocess import MllamaImageProcessor

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../../tests/data/golden/preprocess")
meta = json.load(open(os.path.join(root, "meta.json")))
inputs = safetensors_io.read(os.path.join(root, "inputs.safetensors"))
exp = safetensors_io.read(os.path.join(root, "expected.safetensors"))
for tag in ("mllama_small", "mllama_full"):
    proc = MllamaImageProcessor(json.load(open(os.path.join(root, f"preprocessor_config_{tag}.json"))))
    ref = exp[f"{tag}.batch.pixel_values"][0]
    worst = 0.0
    for i, im in enumerate(meta["images"]):
        if f"image.{i}" in inputs:
            arr = inputs[f"image.{i}"]
            img = Image.fromarray(arr, "RGBA" if arr.ndim == 3 and arr.shape[2] == 4 else None)
        else:
            img = Image.open(os.path.join(root, im["file"]))
        pv, ar_id, mask, n = proc(img)
        assert ar_id == exp[f"{tag}.batch.aspect_ratio_ids"][0, i], (tag, i)
        assert np.array_equal(mask, exp[f"{tag}.batch.aspect_ratio_mask"][0, i]), (tag, i)
        k = pv.shape[-1] // ref.shape[-1]
        worst = max(worst, float(np.abs(pv[..., ::k, ::k] - ref[i]).max()))
    print(tag, "max abs pixel diff", worst)
