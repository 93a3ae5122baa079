#!/usr/bin/python3
"""Runs torch_peer.py's model code (f32) on the repo's LLaVA reference cases and compares with their expected
outputs: tests/data/golden/llava_tiny (produced by transformers 4.45.2 itself) and the held-out
tests/data/heldout/llava_{full_bf16,default_deep} (bf16 weights, llama3 RoPE scaling, tied embeddings, 4:1
grouped-query attention, "full" feature strategy, other feature layers). Per case: the projected image
features, each batch item's last-position prefill logits (the item alone, without its left padding, as
the peer runs a prompt) and its greedy tokens through the peer's preallocated KV cache.

    /usr/bin/python3 benchmarks/peers/check_reference.py [CASE_DIR...]

Exit status 1 when a relative error (max |peer - expected| / max |expected|) exceeds 1e-4 or a greedy token
differs.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import torch_peer  # noqa: E402

CASES = [os.path.join(REPO, "tests", "data", d) for d in
         ("golden/llava_tiny", "heldout/llava_full_bf16", "heldout/llava_default_deep")]
TOLERANCE = 1e-4


def rel(got, want):
    return float((got - want).abs().max() / want.abs().max())


def check_case(case):
    config, W = torch_peer.load_checkpoint(case, torch.float32)
    inputs = torch_peer.load_safetensors(os.path.join(case, "inputs.safetensors"), torch.float32)
    expected = torch_peer.load_safetensors(os.path.join(case, "expected.safetensors"), torch.float32)
    vision = torch_peer.LlavaVision(config, W, torch.float32)
    lm = torch_peer.Llama(config["text_config"], W, "language_model.", torch.float32)
    image_token = config["image_token_index"]
    ids_all, mask, pixels = inputs["input_ids"], inputs["attention_mask"].bool(), inputs["pixel_values"]
    want_tokens = expected["greedy_tokens"]
    ok, lines = True, []
    with torch.inference_mode():
        feats = vision.features(pixels)
        e = rel(feats, expected["image_features"])
        ok &= e <= TOLERANCE
        lines.append("image_features %s rel %.2e" % (tuple(feats.shape), e))
        per_image = feats.shape[1]
        first = 0
        for b in range(ids_all.shape[0]):
            ids = ids_all[b][mask[b]].tolist()
            n_img = ids.count(image_token) // per_image
            embeds = lm.embed_ids(ids)
            if n_img:
                item = feats[first:first + n_img].reshape(-1, feats.shape[-1])
                embeds[0, torch.tensor(ids) == image_token] = item
            first += n_img
            steps = want_tokens.shape[1]
            cache = lm.new_cache(len(ids) + steps)
            logits = lm.forward(embeds, cache, 0)
            e = rel(logits, expected["logits"][b, -1])
            tokens = []
            for i in range(steps):
                tokens.append(int(torch.argmax(logits)))
                if i + 1 < steps:
                    logits = lm.forward(lm.embed_ids([tokens[-1]]), cache, len(ids) + i)
            same = tokens == want_tokens[b].tolist()
            ok &= e <= TOLERANCE and same
            verdict = "equal" if same else "DIFFER %s vs %s" % (tokens, want_tokens[b].tolist())
            lines.append("item %d: %d tokens (%d images), last logits rel %.2e, greedy %d tokens %s" % (
                b, len(ids), n_img, e, steps, verdict))
    return ok, lines


def main(argv):
    torch.set_num_threads(1)
    cases = argv or CASES
    all_ok = True
    for case in cases:
        ok, lines = check_case(case)
        all_ok &= ok
        print("%s: %s" % (os.path.relpath(case, REPO), "PASS" if ok else "FAIL"))
        for ln in lines:
            print("  " + ln)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
