#!/usr/bin/python3
"""Exports a training checkpoint as a Hugging Face style Mllama folder (examples/shapes/) and
writes the PyTorch reference outputs on the bundled samples (train/reference/samples_expected.json)."""
import argparse
import json
import os

import torch
from PIL import Image

import safetensors_io
from bpe_tokenizer import PROMPT, Tokenizer
from common import MAX_NEW_TOKENS, PREPROCESSOR_CONFIG, generation_config, load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def export(ckpt_path, out_dir):
    state = torch.load(ckpt_path, map_location="cpu")
    tok = Tokenizer.train()
    cfg = state["config"]
    if cfg["image_token_index"] != tok.image_id:
        raise SystemExit("tokenizer does not match the checkpoint's config")
    os.makedirs(out_dir, exist_ok=True)
    dump(cfg, os.path.join(out_dir, "config.json"))
    dump(generation_config(tok), os.path.join(out_dir, "generation_config.json"))
    dump(PREPROCESSOR_CONFIG, os.path.join(out_dir, "preprocessor_config.json"))
    dump(tok.to_json(), os.path.join(out_dir, "tokenizer.json"))
    dump(tok.config_json(), os.path.join(out_dir, "tokenizer_config.json"))
    weights = {k: v.detach().float().contiguous().numpy() for k, v in state["model"].items()}
    safetensors_io.write(os.path.join(out_dir, "model.safetensors"), weights)
    return state


def reference(model_dir, samples_dir, out_path):
    """Greedy outputs of the exported files (reloaded from disk) on the bundled samples."""
    model, tok, builder = load_checkpoint(model_dir)
    eot = tok.id("<|eot_id|>")
    records, exact = [], 0
    for line in open(os.path.join(samples_dir, "captions.jsonl")):
        rec = json.loads(line)
        img = Image.open(os.path.join(samples_dir, rec["file"]))
        margins = []
        gen = builder.greedy(model, [img], MAX_NEW_TOKENS, margins)[0]
        text = tok.decode(gen)
        stopped = len(gen) < MAX_NEW_TOKENS
        exact += text.strip() == rec["caption"]
        records.append({"file": rec["file"], "caption": rec["caption"], "prompt_ids": builder.prompt,
                        "generated_ids": gen + ([eot] if stopped else []), "text": text,
                        "exact": text.strip() == rec["caption"], "min_top1_margin": round(margins[0], 6)})
    head = {"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS,
            "note": "generated_ids: greedy tokens of the PyTorch model (float32), ending with <|eot_id|> when it "
                    "stopped; min_top1_margin: smallest top-1 minus top-2 logit gap over the decoding steps",
            "exact_captions": exact}
    with open(out_path, "w") as f:
        # one sample per line keeps the file short and diffable
        f.write(json.dumps(head, indent=2)[:-2] + ',\n  "samples": [\n')
        f.write(",\n".join("    " + json.dumps(r) for r in records))
        f.write("\n  ]\n}\n")
    return exact, len(records), min(r["min_top1_margin"] for r in records)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(HERE, "run", "best.pt"))
    ap.add_argument("--out", default=os.path.dirname(HERE))
    ap.add_argument("--samples", default=os.path.join(HERE, "../../../tests/data/demo/samples"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    state = export(args.ckpt, args.out)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out) if os.path.isfile(os.path.join(args.out, f)))
    print(f"exported step {state['step']} (train-time eval: one {state['acc_one']:.3f}, two {state['acc_two']:.3f}); "
          f"checkpoint files {size / 1e6:.2f} MB")
    os.makedirs(os.path.join(HERE, "reference"), exist_ok=True)
    exact, n, margin = reference(args.out, args.samples, os.path.join(HERE, "reference", "samples_expected.json"))
    print(f"samples: {exact}/{n} exact captions, smallest top-1 margin {margin:.4f}")


if __name__ == "__main__":
    main()
