"""Checks the PyTorch Mllama against the transformers reference outputs in tests/data/golden."""
import json
import os
import sys

import numpy as np
import torch

import safetensors_io
from mllama import MllamaForConditionalGeneration

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../../tests/data/golden/mllama_tiny")
cfg = json.load(open(os.path.join(root, "config.json")))
model = MllamaForConditionalGeneration(cfg)
weights = {k: torch.from_numpy(v) for k, v in safetensors_io.read(os.path.join(root, "model.safetensors")).items()}
missing, unexpected = model.load_state_dict(weights, strict=False)
print("missing", missing, "unexpected", unexpected)
inp = {k: torch.from_numpy(v) for k, v in safetensors_io.read(os.path.join(root, "inputs.safetensors")).items()}
exp = safetensors_io.read(os.path.join(root, "expected.safetensors"))
with torch.no_grad():
    vo = model.vision_model(inp["pixel_values"], inp["aspect_ratio_ids"], inp["aspect_ratio_mask"])
    logits, hidden, cross, row = model(inp["input_ids"], inp["pixel_values"], inp["aspect_ratio_ids"],
                                       inp["aspect_ratio_mask"], inp["cross_attention_mask"],
                                       attention_mask=inp["attention_mask"], position_ids=inp["position_ids"],
                                       return_hidden=True)


def rel(a, b, mask=None):
    a, b = np.asarray(a), np.asarray(b)
    if mask is not None:
        a, b = a[mask], b[mask]
    return float(np.abs(a - b).max() / np.abs(b).max())


real = inp["attention_mask"].numpy() == 1
print("vision_output rel", rel(vo.numpy(), exp["vision_output"]))
print("cross_attention_states rel", rel(cross.numpy(), exp["cross_attention_states"]))
print("row mask equal", np.array_equal(row[..., 0].numpy(), exp["full_text_row_masked_out_mask"]))
print("logits rel", rel(logits.numpy(), exp["logits"], real))
worst = max(rel(hidden[i].numpy(), exp[f"hidden_states.{i}"], real) for i in range(len(hidden) - 1))
print("hidden states worst rel", worst)
