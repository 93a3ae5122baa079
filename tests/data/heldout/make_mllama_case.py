# Held-out Mllama case generator: an independent torch implementation of the reference semantics
# (written from reading transformers' modeling_mllama.py), random weights, other shapes.
import json, math, struct, sys, os
import torch
import torch.nn.functional as F

torch.manual_seed(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
out_dir = sys.argv[1]
bf16 = "--bf16" in sys.argv
tie = "--tie" in sys.argv
os.makedirs(out_dir, exist_ok=True)

# ---------------- config ----------------
T = 3  # max tiles
ratios = [[1, 1], [1, 2], [1, 3], [2, 1], [3, 1]]
vc = dict(hidden_size=48, attention_heads=3, intermediate_size=80, num_hidden_layers=3, num_global_layers=2,
          image_size=42, patch_size=14, num_channels=3, max_num_tiles=T, intermediate_layers_indices=[0, 2],
          vision_output_dim=48 * 3, norm_eps=1e-5, hidden_act="gelu", supported_aspect_ratios=ratios,
          model_type="mllama_vision_model")
tc = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, intermediate_size=160, num_hidden_layers=5,
          cross_attention_layers=[0, 3], vocab_size=300, rms_norm_eps=1e-6, rope_theta=10000.0,
          rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=32),
          hidden_act="silu", tie_word_embeddings=tie, bos_token_id=290, eos_token_id=291, pad_token_id=292,
          max_position_embeddings=512, model_type="mllama_text_model")
config = dict(architectures=["MllamaForConditionalGeneration"], model_type="mllama", image_token_index=300,
              text_config=tc, vision_config=vc, torch_dtype="bfloat16" if bf16 else "float32")

# ---------------- weights ----------------
W = {}
def p(name, *shape, scale=None, mean=0.0):
    t = torch.randn(*shape) * (scale if scale is not None else 1.0 / math.sqrt(shape[-1])) + mean
    if bf16:
        t = t.to(torch.bfloat16).to(torch.float32)
    W[name] = t
    return t

H, A = vc["hidden_size"], len(ratios) + 1
P = (vc["image_size"] // vc["patch_size"]) ** 2 + 1
v = "vision_model."
p(v + "patch_embedding.weight", H, 3, 14, 14, scale=0.05)
p(v + "class_embedding", H, scale=0.5)
p(v + "gated_positional_embedding.embedding", P, H, scale=0.5)
p(v + "gated_positional_embedding.gate", 1, scale=0.5)
p(v + "gated_positional_embedding.tile_embedding.weight", A, T * P * H, scale=0.5)
for n in ["pre", "post"]:
    p(v + f"{n}_tile_positional_embedding.embedding.weight", A, T * H, scale=0.5)
    p(v + f"{n}_tile_positional_embedding.gate", 1, scale=0.5)
for n in ["layernorm_pre", "layernorm_post"]:
    p(v + n + ".weight", H, scale=0.1, mean=1.0); p(v + n + ".bias", H, scale=0.1)
def vlayer(prefix, gated):
    for n in ["q", "k", "v", "o"]:
        p(prefix + f"self_attn.{n}_proj.weight", H, H)
    p(prefix + "mlp.fc1.weight", vc["intermediate_size"], H); p(prefix + "mlp.fc1.bias", vc["intermediate_size"], scale=0.1)
    p(prefix + "mlp.fc2.weight", H, vc["intermediate_size"]); p(prefix + "mlp.fc2.bias", H, scale=0.1)
    for n in ["input_layernorm", "post_attention_layernorm"]:
        p(prefix + n + ".weight", H, scale=0.1, mean=1.0); p(prefix + n + ".bias", H, scale=0.1)
    if gated:
        p(prefix + "gate_attn", 1, scale=0.5); p(prefix + "gate_ffn", 1, scale=0.5)
for i in range(vc["num_hidden_layers"]):
    vlayer(v + f"transformer.layers.{i}.", False)
for i in range(vc["num_global_layers"]):
    vlayer(v + f"global_transformer.layers.{i}.", True)

D = tc["hidden_size"]; nh = tc["num_attention_heads"]; nkv = tc["num_key_value_heads"]; hd = D // nh
I = tc["intermediate_size"]; V = tc["vocab_size"]
p("multi_modal_projector.weight", D, vc["vision_output_dim"]); p("multi_modal_projector.bias", D, scale=0.1)
lm = "language_model.model."
p(lm + "embed_tokens.weight", V + 8, D, scale=1.0)
p(lm + "norm.weight", D, scale=0.1, mean=1.0)
if not tie:
    p("language_model.lm_head.weight", V, D)
for i in range(tc["num_hidden_layers"]):
    pre = lm + f"layers.{i}."
    p(pre + "input_layernorm.weight", D, scale=0.1, mean=1.0)
    p(pre + "post_attention_layernorm.weight", D, scale=0.1, mean=1.0)
    for n, o, inn in [("gate_proj", I, D), ("up_proj", I, D), ("down_proj", D, I)]:
        p(pre + f"mlp.{n}.weight", o, inn)
    a = pre + ("cross_attn." if i in tc["cross_attention_layers"] else "self_attn.")
    p(a + "q_proj.weight", nh * hd, D); p(a + "k_proj.weight", nkv * hd, D); p(a + "v_proj.weight", nkv * hd, D)
    p(a + "o_proj.weight", D, nh * hd)
    if i in tc["cross_attention_layers"]:
        p(a + "q_norm.weight", hd, scale=0.1, mean=1.0); p(a + "k_norm.weight", hd, scale=0.1, mean=1.0)
        p(pre + "cross_attn_attn_gate", 1, scale=0.8); p(pre + "cross_attn_mlp_gate", 1, scale=0.8)

# ---------------- inputs ----------------
B, NI, S = 2, 3, 14
IMG = 300
# item 0: BOS t t <img><img> t t t t <img> t t t t ; images of 2, 3, 1 tiles (consecutive tags share a span)
ids0 = [290, 5, 6, IMG, IMG, 7, 8, 9, 10, IMG, 11, 12, 13, 14]
# item 1: 4 pads, <img> BOS t ...; one image of 3 tiles (2x1... -> 3 tiles as (3,1)), slots 1, 2 empty
ids1 = [292] * 4 + [IMG, 290, 20, 21, 22, 23, 24, 25, 26, 27]
input_ids = torch.tensor([ids0, ids1])
attention_mask = torch.tensor([[1] * 14, [0] * 4 + [1] * 10])
position_ids = attention_mask.cumsum(-1) - 1
position_ids.masked_fill_(attention_mask == 0, 1)
tiles = [[2, 3, 1], [3, 0, 0]]
ar_index = {(1, 1): 1, (1, 2): 2, (1, 3): 3, (2, 1): 4, (3, 1): 5}
ar_ids = torch.tensor([[ar_index[(1, 2)], ar_index[(3, 1)], ar_index[(1, 1)]], [ar_index[(3, 1)], 0, 0]])
ar_mask = torch.zeros(B, NI, T, dtype=torch.long)
for b in range(B):
    for i in range(NI):
        ar_mask[b, i, :max(tiles[b][i], 1)] = 1
pixel_values = torch.zeros(B, NI, T, 3, 42, 42)
for b in range(B):
    for i in range(NI):
        pixel_values[b, i, :tiles[b][i]] = torch.randn(tiles[b][i], 3, 42, 42)
# spans as the processor builds them: consecutive tags all attend from the first tag to the end
spans = [[(3, S), (3, S), (9, S)], [(4, S)]]
xmask = torch.zeros(B, S, NI, T, dtype=torch.long)
for b in range(B):
    for i, (s0, s1) in enumerate(spans[b]):
        xmask[b, s0:s1, i, :tiles[b][i]] = 1

# ---------------- reference forward ----------------
minf = torch.finfo(torch.float32).min
def ln(x, n, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), W[n + ".weight"], W[n + ".bias"], eps)
def rms(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))

def vis_layer(h, mask, prefix, gated):
    r = h
    x = ln(h, prefix + "input_layernorm", vc["norm_eps"])
    n, L, _ = x.shape; nhv = vc["attention_heads"]; d = H // nhv
    q = (x @ W[prefix + "self_attn.q_proj.weight"].T).view(n, L, nhv, d).transpose(1, 2)
    k = (x @ W[prefix + "self_attn.k_proj.weight"].T).view(n, L, nhv, d).transpose(1, 2)
    vv = (x @ W[prefix + "self_attn.v_proj.weight"].T).view(n, L, nhv, d).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, -1) @ vv
    att = att.transpose(1, 2).reshape(n, L, H) @ W[prefix + "self_attn.o_proj.weight"].T
    if gated: att = W[prefix + "gate_attn"].tanh() * att
    h = r + att
    r = h
    x = ln(h, prefix + "post_attention_layernorm", vc["norm_eps"])
    x = F.gelu(x @ W[prefix + "mlp.fc1.weight"].T + W[prefix + "mlp.fc1.bias"])
    x = x @ W[prefix + "mlp.fc2.weight"].T + W[prefix + "mlp.fc2.bias"]
    if gated: x = W[prefix + "gate_ffn"].tanh() * x
    return r + x

def vision(pix, arid, armask):
    n = pix.shape[0] * pix.shape[1]
    x = pix.reshape(n * T, 3, 42, 42)
    pe = F.conv2d(x, W[v + "patch_embedding.weight"], stride=14).flatten(2).transpose(1, 2)  # (nT, np, H)
    np_ = pe.shape[1]
    pe = pe.reshape(n, T, np_, H)
    ids = arid.reshape(n)
    pre = W[v + "pre_tile_positional_embedding.embedding.weight"][ids].reshape(n, T, 1, H)
    pe = pe + W[v + "pre_tile_positional_embedding.gate"].tanh() * pre
    cls = W[v + "class_embedding"].expand(n, T, 1, H)
    h = torch.cat([cls, pe], 2)
    g = W[v + "gated_positional_embedding.gate"].tanh()
    h = h + (1 - g) * W[v + "gated_positional_embedding.embedding"].view(1, 1, P, H)
    h = h + g * W[v + "gated_positional_embedding.tile_embedding.weight"][ids].reshape(n, T, P, H)
    h = ln(h, v + "layernorm_pre")
    pad = (8 - P % 8) % 8; Lp = P + pad
    h = F.pad(h, (0, 0, 0, pad))
    am = armask.reshape(n, T).float().view(n, T, 1, 1).repeat(1, 1, Lp, 1)
    am[:, :, -pad:] = 0
    am = (1 - am).reshape(n, T * Lp, 1)
    mask = (am @ am.transpose(-1, -2) * minf).unsqueeze(1)
    h = h.view(n, T * Lp, H)
    states = [h]
    for i in range(vc["num_hidden_layers"]):
        h = vis_layer(h, mask, v + f"transformer.layers.{i}.", False); states.append(h)
    h = ln(h, v + "layernorm_post")
    h = h.reshape(n, T, Lp, H)
    h = h + W[v + "post_tile_positional_embedding.gate"].tanh() * \
        W[v + "post_tile_positional_embedding.embedding.weight"][ids].reshape(n, T, 1, H)
    h = h.reshape(n, T * Lp, H)
    for i in range(vc["num_global_layers"]):
        h = vis_layer(h, mask, v + f"global_transformer.layers.{i}.", True)
    h = h.reshape(n, T, Lp, H)[:, :, :P]
    inter = torch.stack(states, -1)[..., vc["intermediate_layers_indices"]]
    inter = inter.reshape(n, T, Lp, -1)[:, :, :P]
    return torch.cat([h, inter], -1).reshape(pix.shape[0], pix.shape[1], T, P, -1)

def rope_inv_freq():
    d = hd
    inv = 1.0 / (tc["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    rs = tc["rope_scaling"]; factor = rs["factor"]; lo = rs["low_freq_factor"]; hi = rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wl = old / lo; high_wl = old / hi
    wl = 2 * math.pi / inv
    inv_l = torch.where(wl > low_wl, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    med = ~(wl < high_wl) * ~(wl > low_wl)
    return torch.where(med, smoothed, inv_l)
INV = rope_inv_freq()
def rot(x): return torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1)

def mlp(x, pre):
    return (F.silu(x @ W[pre + "mlp.gate_proj.weight"].T) * (x @ W[pre + "mlp.up_proj.weight"].T)) @ W[pre + "mlp.down_proj.weight"].T

def text(ids, amask, pos, cross_states, xm):
    # xm: (B, S, NI, T) 0/1; ids (B, S)
    Bn, Sn = ids.shape
    h = W[lm + "embed_tokens.weight"][ids]
    cm = xm.repeat_interleave(P, dim=3).view(Bn, Sn, -1).unsqueeze(1).float()
    inv = (1.0 - cm)
    cm = inv.masked_fill(inv.bool(), minf)
    row = (cm != minf).any(-1).float()[..., None]
    cm = cm * row
    causal = torch.full((Sn, Sn), minf).triu(1)[None, None].expand(Bn, 1, Sn, Sn).clone()
    pad = (causal + amask[:, None, None, :].float()) == 0
    causal = causal.masked_fill(pad, minf)
    freqs = pos[:, :, None].float() * INV[None, None, :]
    emb = torch.cat([freqs, freqs], -1); cos, sin = emb.cos()[:, None], emb.sin()[:, None]
    hs = [h]; last = None
    for i in range(tc["num_hidden_layers"]):
        pre = lm + f"layers.{i}."
        r = h
        x = rms(h, W[pre + "input_layernorm.weight"], tc["rms_norm_eps"])
        if i in tc["cross_attention_layers"]:
            a = pre + "cross_attn."
            q = (x @ W[a + "q_proj.weight"].T).view(Bn, Sn, nh, hd).transpose(1, 2)
            q = rms(q, W[a + "q_norm.weight"], tc["rms_norm_eps"])
            k = (cross_states @ W[a + "k_proj.weight"].T).view(Bn, -1, nkv, hd).transpose(1, 2)
            vv = (cross_states @ W[a + "v_proj.weight"].T).view(Bn, -1, nkv, hd).transpose(1, 2)
            k = k.repeat_interleave(nh // nkv, 1); vv = vv.repeat_interleave(nh // nkv, 1)
            k = rms(k, W[a + "k_norm.weight"], tc["rms_norm_eps"])
            att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + cm, -1) @ vv
            att = att.transpose(1, 2).reshape(Bn, Sn, -1) @ W[a + "o_proj.weight"].T
            h = r + W[pre + "cross_attn_attn_gate"].tanh() * att
            r = h
            x = mlp(rms(h, W[pre + "post_attention_layernorm.weight"], tc["rms_norm_eps"]), pre)
            x = row[:, 0] * x
            h = r + W[pre + "cross_attn_mlp_gate"].tanh() * x
        else:
            a = pre + "self_attn."
            q = (x @ W[a + "q_proj.weight"].T).view(Bn, Sn, nh, hd).transpose(1, 2)
            k = (x @ W[a + "k_proj.weight"].T).view(Bn, Sn, nkv, hd).transpose(1, 2)
            vv = (x @ W[a + "v_proj.weight"].T).view(Bn, Sn, nkv, hd).transpose(1, 2)
            q = q * cos + rot(q) * sin; k = k * cos + rot(k) * sin
            k = k.repeat_interleave(nh // nkv, 1); vv = vv.repeat_interleave(nh // nkv, 1)
            att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + causal, -1) @ vv
            att = att.transpose(1, 2).reshape(Bn, Sn, -1) @ W[a + "o_proj.weight"].T
            h = r + att
            r = h
            h = r + mlp(rms(h, W[pre + "post_attention_layernorm.weight"], tc["rms_norm_eps"]), pre)
        if i + 1 < tc["num_hidden_layers"]: hs.append(h)
        last = h
    h = rms(h, W[lm + "norm.weight"], tc["rms_norm_eps"])
    hs.append(h)
    head = W[lm + "embed_tokens.weight"] if tie else W["language_model.lm_head.weight"]
    return h @ head.T, hs, last, row[:, 0, :, 0]

with torch.no_grad():
    vout = vision(pixel_values, ar_ids, ar_mask)
    cross = (vout @ W["multi_modal_projector.weight"].T + W["multi_modal_projector.bias"]).reshape(B, -1, D)
    logits, hs, last, rowmask = text(input_ids, attention_mask, position_ids, cross, xmask)
    # greedy, uncached: recompute the whole sequence each step; the new rows copy the last mask row
    ids, am, xm = input_ids.clone(), attention_mask.clone(), xmask.clone()
    toks, scores = [], []
    step_logits = logits[:, -1]
    for step in range(6):
        nxt = step_logits.argmax(-1)
        top2 = step_logits.topk(2, -1).values
        print("step", step, "margin", float((top2[:, 0] - top2[:, 1]).min()))
        toks.append(nxt); scores.append(step_logits)
        ids = torch.cat([ids, nxt[:, None]], 1); am = torch.cat([am, torch.ones(B, 1, dtype=torch.long)], 1)
        xm = torch.cat([xm, xm[:, -1:]], 1)
        pos = am.cumsum(-1) - 1; pos.masked_fill_(am == 0, 1)
        step_logits = text(ids, am, pos, cross, xm)[0][:, -1]

expected = {"logits": logits, "vision_output": vout, "cross_attention_states": cross,
            "full_text_row_masked_out_mask": rowmask, "layer_output.%d" % (tc["num_hidden_layers"] - 1): last,
            "greedy_tokens": torch.stack(toks, 1), "greedy_scores": torch.stack(scores, 1)}
for i, x in enumerate(hs): expected["hidden_states.%d" % i] = x
inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
          "pixel_values": pixel_values, "aspect_ratio_ids": ar_ids, "aspect_ratio_mask": ar_mask,
          "cross_attention_mask": xmask, "num_tiles": torch.tensor(tiles)}

def save(path, tensors, as_bf16=False):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        if t.dtype == torch.float32 and as_bf16:
            raw = t.to(torch.bfloat16).view(torch.int16).numpy().tobytes(); dt = "BF16"
        elif t.dtype == torch.float32:
            raw = t.numpy().tobytes(); dt = "F32"
        else:
            raw = t.to(torch.int64).numpy().tobytes(); dt = "I64"
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b_ in blobs: f.write(b_)

save(os.path.join(out_dir, "model.safetensors"), W, as_bf16=bf16)
save(os.path.join(out_dir, "inputs.safetensors"), inputs)
save(os.path.join(out_dir, "expected.safetensors"), expected)
json.dump(config, open(os.path.join(out_dir, "config.json"), "w"), indent=1)
print("wrote", out_dir)
