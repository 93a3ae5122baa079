#!/usr/bin/python3
"""Trains the shapes demo Mllama on pictures rendered on the fly (seeded, time-budgeted).

Curriculum: one-shape pictures only for the first part of the budget, then a mix with mostly
two-shape pictures. Loss on the answer tokens only. Exact-caption accuracy of greedy decoding on
fresh pictures is measured and logged as training goes; the best checkpoint is kept."""
import argparse
import json
import math
import os
import random
import time

import torch
from torch import nn

from common import BatchBuilder, load_tokenizer, make_config
from mllama import MllamaForConditionalGeneration
from preprocess import fit_to_canvas, optimal_canvas
from shapes_world import COLOUR_NAMES, SHAPES, random_example, relation

RELATIONS = ["left of", "right of", "above", "below"]


def init_weights(model, std):
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(mod.weight, std=std)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Embedding):
            nn.init.normal_(mod.weight, std=std)


def patch_targets(scenes, vision_cfg):
    """Training-only auxiliary targets on the vision tokens (batch, tiles, tokens): the patch that
    holds a shape's centre gets its shape index, its colour index and the centre's position on the
    canvas (in tiles) and, in two-shape pictures, where it lies relative to the other shape (the
    caption's relation when it is shape 1); every other token has shape -100. Supervising the
    encoder's tokens directly teaches it shapes and positions faster than the caption loss, which
    first has to learn where to look; the relation target makes the global layer compare the two
    shapes, so the decoder reads the relation from the token of the shape it has just named."""
    tile, patch, max_tiles = vision_cfg["image_size"], vision_cfg["patch_size"], vision_cfg["max_num_tiles"]
    grid = tile // patch
    shape_t = torch.full((len(scenes), max_tiles, grid * grid + 1), -100, dtype=torch.long)
    colour_t = torch.full_like(shape_t, -100)
    pos_t = torch.zeros(shape_t.shape + (2,))
    rel_t = torch.full_like(shape_t, -100)
    for b, sc in enumerate(scenes):
        w, h = sc["width"], sc["height"]
        ch, cw = optimal_canvas(h, w, max_tiles, tile)
        nh, nw = fit_to_canvas(h, w, ch, cw, tile)
        cols = cw // tile
        for it in sc["shapes"]:
            x, y = it["cx"] * nw / w, it["cy"] * nh / h
            t = int(y // tile) * cols + int(x // tile)
            k = 1 + min(int((y % tile) // patch), grid - 1) * grid + min(int((x % tile) // patch), grid - 1)
            shape_t[b, t, k] = SHAPES.index(it["shape"])
            colour_t[b, t, k] = COLOUR_NAMES.index(it["colour"])
            pos_t[b, t, k] = torch.tensor([x / tile, y / tile])
            others = [o for o in sc["shapes"] if o is not it]
            if others:
                rel_t[b, t, k] = RELATIONS.index(relation(it, others[0]))
    return shape_t, colour_t, pos_t, rel_t


@torch.no_grad()
def accuracy(model, builder, rng, n, num_shapes, batch=50):
    """Exact-caption rate of greedy decoding, computed teacher-forced: greedy reproduces the caption
    and its <|eot_id|> exactly when the argmax is the right token at every answer position."""
    model.eval()
    correct = 0
    for start in range(0, n, batch):
        examples = [random_example(rng, num_shapes) for _ in range(min(batch, n - start))]
        ids, labels, pv, ar_ids, ar_mask, xmask = builder.train_batch([e[0] for e in examples], [e[1] for e in examples])
        pred = model(ids, pv, ar_ids, ar_mask, xmask).argmax(-1)
        correct += int(((pred == labels) | (labels == -100)).all(dim=1).sum())
    model.train()
    return correct / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "run"))
    ap.add_argument("--minutes", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--one_shape_fraction", type=float, default=0.3,
                    help="longest part of the budget on one-shape pictures only")
    ap.add_argument("--one_shape_target", type=float, default=0.8,
                    help="one-shape accuracy that ends the one-shape phase early")
    ap.add_argument("--two_shape_prob", type=float, default=0.7, help="share of two-shape pictures after that")
    ap.add_argument("--gate_init", type=float, default=1.0, help="cross-attention gates (HF init is 0)")
    ap.add_argument("--eval_every", type=float, default=4.0, help="minutes between evaluations")
    ap.add_argument("--eval_n", type=int, default=60)
    ap.add_argument("--aux_weight", type=float, default=1.0, help="weight of the vision-token shape/colour loss")
    ap.add_argument("--pos_weight", type=float, default=1.0, help="weight of the centre-position part of it")
    ap.add_argument("--rel_aux_weight", type=float, default=1.0,
                    help="weight of the vision-token relation-to-the-other-shape part of it")
    ap.add_argument("--relation_weight", type=float, default=1.0,
                    help="weight of the caption loss on the relation tokens (left/right/above/below)")
    ap.add_argument("--init", default=None, help="start from this checkpoint's weights (continuing a run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; with 2 cores shared by other jobs, 1 is much faster than 2")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    tok = load_tokenizer()
    cfg = make_config(tok)
    model = MllamaForConditionalGeneration(cfg, gate_init=args.gate_init)
    init_weights(model, cfg["text_config"]["initializer_range"])
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu")["model"])
    builder = BatchBuilder(tok)
    rel_ids = sorted({i for w in (" left", " right", " above", " below") for i in tok.encode(w)})
    n_params = sum(p.numel() for p in model.parameters())
    hidden = cfg["text_config"]["hidden_size"]
    # Auxiliary heads on the projected vision tokens; used for training only, not exported.
    aux_heads = nn.Linear(hidden, len(SHAPES) + len(COLOUR_NAMES) + 2 + len(RELATIONS))
    params = list(model.named_parameters()) + [("aux." + n, p) for n, p in aux_heads.named_parameters()]
    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    log = open(os.path.join(args.out, "train_log.jsonl"), "a")

    def record(entry):
        print(json.dumps(entry), flush=True)
        log.write(json.dumps(entry) + "\n")
        log.flush()

    record({"event": "start", "params": n_params, "args": vars(args), "relation_ids": rel_ids})
    budget = args.minutes * 60
    t0 = time.time()
    next_eval = args.eval_every * 60
    step, best, ema, aux_ema, two_phase = 0, -1.0, None, None, False
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        two_phase = two_phase or frac >= args.one_shape_fraction
        two_prob = args.two_shape_prob if two_phase else 0.0
        examples = [random_example(rng, 2 if rng.random() < two_prob else 1) for _ in range(args.batch)]
        ids, labels, pv, ar_ids, ar_mask, xmask = builder.train_batch([e[0] for e in examples], [e[1] for e in examples])
        proj = model.multi_modal_projector(model.vision_model(pv, ar_ids, ar_mask))  # (B, 1, tiles, tokens, hidden)
        logits = model.text_forward(ids, proj.reshape(len(examples), -1, hidden), xmask)
        flat = labels.reshape(-1)
        tok_loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=-100, reduction="none")
        w = (flat != -100).float()
        if args.relation_weight != 1.0:
            w = w * torch.where(torch.isin(flat, torch.tensor(rel_ids)), args.relation_weight, 1.0)
        loss = (tok_loss * w).sum() / (flat != -100).sum()
        shape_t, colour_t, pos_t, rel_t = patch_targets([e[2] for e in examples], cfg["vision_config"])
        centre = shape_t >= 0
        aux = aux_heads(proj[:, 0][centre])
        n_s, n_c = len(SHAPES), len(COLOUR_NAMES)
        aux_loss = (nn.functional.cross_entropy(aux[:, :n_s], shape_t[centre])
                    + nn.functional.cross_entropy(aux[:, n_s:n_s + n_c], colour_t[centre])
                    + args.pos_weight * nn.functional.mse_loss(aux[:, n_s + n_c:n_s + n_c + 2], pos_t[centre]))
        if (rel_t[centre] >= 0).any():
            aux_loss = aux_loss + args.rel_aux_weight * nn.functional.cross_entropy(
                aux[:, n_s + n_c + 2:], rel_t[centre], ignore_index=-100)
        caption_loss = loss.item()
        loss = loss + args.aux_weight * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        step += 1
        ema = caption_loss if ema is None else 0.98 * ema + 0.02 * caption_loss
        aux_ema = aux_loss.item() if step == 1 else 0.98 * aux_ema + 0.02 * aux_loss.item()
        if step % 25 == 0:
            record({"step": step, "min": round(elapsed / 60, 2), "loss": round(ema, 4), "aux_loss": round(aux_ema, 4), "lr": lr, "two_prob": two_prob})
        if time.time() - t0 >= next_eval or time.time() - t0 >= budget:
            next_eval += args.eval_every * 60
            eval_rng = random.Random(999)
            acc1 = accuracy(model, builder, eval_rng, args.eval_n, 1)
            acc2 = accuracy(model, builder, eval_rng, args.eval_n, 2)
            two_phase = two_phase or acc1 >= args.one_shape_target
            record({"eval_step": step, "min": round((time.time() - t0) / 60, 2), "acc_one": acc1, "acc_two": acc2})
            state = {"config": cfg, "model": model.state_dict(), "step": step, "acc_one": acc1, "acc_two": acc2}
            torch.save(state, os.path.join(args.out, "last.pt"))
            score = acc2 + 0.5 * acc1
            if score > best:
                best = score
                torch.save(state, os.path.join(args.out, "best.pt"))
    record({"event": "end", "step": step, "minutes": round((time.time() - t0) / 60, 2)})


if __name__ == "__main__":
    main()
