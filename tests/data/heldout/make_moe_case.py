# Held-out MoE case generator: an independent torch implementation of the Mixtral / Qwen2-MoE / OLMoE
# reference semantics (written from reading transformers' modeling_{mixtral,qwen2_moe,olmoe}.py, not copied),
# random weights, shapes and switches the golden cases do not have. Same layout and tensor names as the
# golden cases. Usage: python3 make_moe_case.py OUT_DIR {qwen2_moe_mixed|olmoe_clip|mixtral_top1} SEED
import json, math, os, struct, sys
import torch

out_dir, variant, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out_dir, exist_ok=True)

if variant == "qwen2_moe_mixed":
    # Layers 1 and 3 pass decoder_sparse_step 2, layer 3 is listed in mlp_only_layers: only layer 1 routes.
    cfg = dict(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", hidden_size=48, num_hidden_layers=4,
               num_attention_heads=6, num_key_value_heads=2, intermediate_size=72, moe_intermediate_size=40,
               shared_expert_intermediate_size=56, num_experts=6, num_experts_per_tok=2, norm_topk_prob=True,
               decoder_sparse_step=2, mlp_only_layers=[3], vocab_size=200, rms_norm_eps=1e-6, rope_theta=10000.0,
               rope_scaling=None, hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False,
               sliding_window=None, max_window_layers=4, bos_token_id=1, eos_token_id=2, pad_token_id=0,
               max_position_embeddings=256, torch_dtype="bfloat16")
    B, S, pad = 2, 10, [0, 3]
elif variant == "olmoe_clip":
    cfg = dict(architectures=["OlmoeForCausalLM"], model_type="olmoe", hidden_size=40, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, intermediate_size=24, num_experts=5,
               num_experts_per_tok=3, norm_topk_prob=True, attention_bias=True, clip_qkv=0.35, vocab_size=150,
               rms_norm_eps=1e-5, rope_theta=500.0, rope_scaling=None, hidden_act="silu", tie_word_embeddings=False,
               pad_token_id=1, eos_token_id=2, max_position_embeddings=256, torch_dtype="float32")
    B, S, pad = 2, 9, [2, 0]
elif variant == "mixtral_top1":
    cfg = dict(architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, num_key_value_heads=1, intermediate_size=20, num_local_experts=4,
               num_experts_per_tok=1, vocab_size=120, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
               tie_word_embeddings=False, sliding_window=None, bos_token_id=1, eos_token_id=2, pad_token_id=0,
               max_position_embeddings=256, torch_dtype="float32")
    B, S, pad = 1, 11, [0]
else:
    raise SystemExit("unknown variant " + variant)

H, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
D = H // NH
E = cfg.get("num_experts", cfg.get("num_local_experts"))
K = cfg["num_experts_per_tok"]
bf16 = cfg["torch_dtype"] == "bfloat16"
family = cfg["model_type"]


def sparse(i):
    if family != "qwen2_moe":
        return True
    return i not in cfg["mlp_only_layers"] and (i + 1) % cfg["decoder_sparse_step"] == 0


def make_weights(gen):
    W = {}

    def p(name, *shape, scale=None, offset=0.0):
        s = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
        t = torch.randn(*shape, generator=gen) * s + offset
        if bf16:
            t = t.to(torch.bfloat16).to(torch.float32)
        W[name] = t

    p("model.embed_tokens.weight", V, H, scale=1.0)
    for i in range(L):
        pre = f"model.layers.{i}."
        p(pre + "input_layernorm.weight", H, scale=0.2, offset=1.0)
        p(pre + "post_attention_layernorm.weight", H, scale=0.2, offset=1.0)
        a = pre + "self_attn."
        p(a + "q_proj.weight", NH * D, H)
        p(a + "k_proj.weight", NKV * D, H)
        p(a + "v_proj.weight", NKV * D, H)
        p(a + "o_proj.weight", H, NH * D)
        if family == "qwen2_moe" or cfg.get("attention_bias"):
            p(a + "q_proj.bias", NH * D, scale=0.3)
            p(a + "k_proj.bias", NKV * D, scale=0.3)
            p(a + "v_proj.bias", NKV * D, scale=0.3)
        if cfg.get("attention_bias"):
            p(a + "o_proj.bias", H, scale=0.3)
        if family == "olmoe":
            p(a + "q_norm.weight", NH * D, scale=0.2, offset=1.0)
            p(a + "k_norm.weight", NKV * D, scale=0.2, offset=1.0)
        if family == "mixtral":
            m = pre + "block_sparse_moe."
            p(m + "gate.weight", E, H)
            for e in range(E):
                p(m + f"experts.{e}.w1.weight", cfg["intermediate_size"], H)
                p(m + f"experts.{e}.w3.weight", cfg["intermediate_size"], H)
                p(m + f"experts.{e}.w2.weight", H, cfg["intermediate_size"])
        elif sparse(i):
            m = pre + "mlp."
            I = cfg["moe_intermediate_size"] if family == "qwen2_moe" else cfg["intermediate_size"]
            p(m + "gate.weight", E, H)
            for e in range(E):
                p(m + f"experts.{e}.gate_proj.weight", I, H)
                p(m + f"experts.{e}.up_proj.weight", I, H)
                p(m + f"experts.{e}.down_proj.weight", H, I)
            if family == "qwen2_moe":
                SI = cfg["shared_expert_intermediate_size"]
                p(m + "shared_expert.gate_proj.weight", SI, H)
                p(m + "shared_expert.up_proj.weight", SI, H)
                p(m + "shared_expert.down_proj.weight", H, SI)
                p(m + "shared_expert_gate.weight", 1, H)
        else:
            m = pre + "mlp."
            p(m + "gate_proj.weight", cfg["intermediate_size"], H)
            p(m + "up_proj.weight", cfg["intermediate_size"], H)
            p(m + "down_proj.weight", H, cfg["intermediate_size"])
    p("model.norm.weight", H, scale=0.2, offset=1.0)
    if not cfg["tie_word_embeddings"]:
        p("lm_head.weight", V, H)
    return W


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def lin(W, name, x):
    y = x @ W[name + ".weight"].T
    return y + W[name + ".bias"] if name + ".bias" in W else y


def rope(x, pos):  # x [B, S, heads, D], half split
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    ang = pos[..., None].float() * inv  # [B, S, D/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[:, :, None], torch.cat([ang.sin()] * 2, -1)[:, :, None]
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def swiglu(W, pre, x):
    g = lin(W, pre + ("w1" if family == "mixtral" else "gate_proj"), x)
    u = lin(W, pre + ("w3" if family == "mixtral" else "up_proj"), x)
    return lin(W, pre + ("w2" if family == "mixtral" else "down_proj"), torch.nn.functional.silu(g) * u)


def forward(W, ids, amask, pos):
    Bn, Sn = ids.shape
    eps = cfg["rms_norm_eps"]
    h = W["model.embed_tokens.weight"][ids]
    hidden, routers = [h], {}
    neg = torch.finfo(torch.float32).min
    allowed = torch.tril(torch.ones(Sn, Sn, dtype=torch.bool))[None] & amask.bool()[:, None, :]
    add_mask = torch.where(allowed, 0.0, neg)[:, None]  # [B, 1, S, S]
    for i in range(L):
        pre = f"model.layers.{i}."
        x = rms(h, W[pre + "input_layernorm.weight"], eps)
        a = pre + "self_attn."
        q, k, v = lin(W, a + "q_proj", x), lin(W, a + "k_proj", x), lin(W, a + "v_proj", x)
        if family == "olmoe":
            q, k = rms(q, W[a + "q_norm.weight"], eps), rms(k, W[a + "k_norm.weight"], eps)
            if cfg.get("clip_qkv") is not None:
                c = cfg["clip_qkv"]
                q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q = rope(q.view(Bn, Sn, NH, D), pos).transpose(1, 2)
        k = rope(k.view(Bn, Sn, NKV, D), pos).transpose(1, 2).repeat_interleave(NH // NKV, 1)
        v = v.view(Bn, Sn, NKV, D).transpose(1, 2).repeat_interleave(NH // NKV, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + add_mask, -1)
        o = (att @ v).transpose(1, 2).reshape(Bn, Sn, NH * D)
        h = h + lin(W, a + "o_proj", o)
        x = rms(h, W[pre + "post_attention_layernorm.weight"], eps).reshape(Bn * Sn, H)
        if sparse(i):
            m = pre + ("block_sparse_moe." if family == "mixtral" else "mlp.")
            logits = lin(W, m + "gate", x)
            routers[i] = logits
            p = torch.softmax(logits, -1)
            w, sel = torch.topk(p, K, -1)
            if family == "mixtral" or cfg.get("norm_topk_prob"):
                w = w / w.sum(-1, keepdim=True)
            y = torch.zeros_like(x)
            for t in range(x.shape[0]):
                for j in range(K):
                    y[t] += w[t, j] * swiglu(W, m + f"experts.{int(sel[t, j])}.", x[t])
            if family == "qwen2_moe":
                y = y + torch.sigmoid(lin(W, m + "shared_expert_gate", x)) * swiglu(W, m + "shared_expert.", x)
        else:
            y = swiglu(W, pre + "mlp.", x)
        h = h + y.view(Bn, Sn, H)
        hidden.append(h)
    last = hidden.pop()
    out = rms(last, W["model.norm.weight"], eps)
    hidden.append(out)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return out @ head.T, hidden, last, routers


def topk_margin(logits, real):
    s = torch.sort(logits[real], -1, descending=True).values
    return float((s[:, K - 1] - s[:, K]).min()) if K < E else 1.0


for attempt in range(50):
    gen = torch.Generator().manual_seed(seed + 1000 * attempt)
    W = make_weights(gen)
    ids = torch.randint(3, V, (B, S), generator=gen)
    amask = torch.ones(B, S, dtype=torch.int64)
    for b, n in enumerate(pad):
        amask[b, :n] = 0
        ids[b, :n] = cfg["pad_token_id"]
    pos = (amask.cumsum(-1) - 1).masked_fill(amask == 0, 1)
    with torch.no_grad():
        logits, hidden, last, routers = forward(W, ids, amask, pos)
        real = amask.reshape(-1).bool()
        margin = min(topk_margin(r, real) for r in routers.values())
        # Greedy decoding without a cache: recompute the whole sequence each step.
        cur_ids, cur_mask, cur_pos = ids, amask, pos
        tokens, scores, gmargin = [], [], 1.0
        for step in range(6):
            lg = forward(W, cur_ids, cur_mask, cur_pos)[0][:, -1]
            top2 = torch.topk(lg, 2, -1).values
            gmargin = min(gmargin, float((top2[:, 0] - top2[:, 1]).min()))
            nxt = lg.argmax(-1)
            tokens.append(nxt)
            scores.append(lg)
            cur_ids = torch.cat([cur_ids, nxt[:, None]], 1)
            cur_mask = torch.cat([cur_mask, torch.ones(B, 1, dtype=torch.int64)], 1)
            cur_pos = torch.cat([cur_pos, cur_pos.max(-1, keepdim=True).values + 1], 1)
    if margin >= 1e-3 and gmargin >= 1e-2:
        break
else:
    raise SystemExit("no seed gave clear margins")


def write_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    order = sorted(tensors.items(), key=lambda kv: (-kv[1][0].itemsize, kv[0]))
    for name, (arr, dt) in order:
        b = arr.tobytes()
        header[name] = dict(dtype=dt, shape=list(arr.shape), data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def f32(t):
    return (t.detach().contiguous().numpy().astype("float32"), "F32")


def i64(t):
    return (t.contiguous().numpy().astype("int64"), "I64")


def weight(t):
    if not bf16:
        return f32(t)
    u = t.contiguous().view(torch.int32).numpy() >> 16  # exact: values are already bf16
    return (u.astype("uint16"), "BF16")


write_safetensors(os.path.join(out_dir, "model.safetensors"), {n: weight(t) for n, t in W.items()})
write_safetensors(os.path.join(out_dir, "inputs.safetensors"),
                  {"input_ids": i64(ids), "attention_mask": i64(amask), "position_ids": i64(pos)})
exp = {"logits": f32(logits), "layer_output.%d" % (L - 1): f32(last),
       "greedy_tokens": i64(torch.stack(tokens, 1)), "greedy_scores": f32(torch.stack(scores, 1))}
for i, h in enumerate(hidden):
    exp["hidden_states.%d" % i] = f32(h)
for i, r in routers.items():
    exp["router_logits.%d" % i] = f32(r)
write_safetensors(os.path.join(out_dir, "expected.safetensors"), exp)
with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
print(variant, "seed", seed, "attempt", attempt, "router margin %.2e greedy margin %.2e" % (margin, gmargin))
