# Held-out LLaVA case generator: an independent torch implementation of the reference semantics of
# LlavaForConditionalGeneration (transformers 4.45, processor-side image-token expansion), written from reading
# transformers' modeling_llava.py / modeling_clip.py / modeling_llama.py, not copied. Random weights, shapes and
# switches the golden llava_tiny case does not have. Same layout and tensor names as the golden cases.
#
# Usage:
#   python3 make_llava_case.py OUT_DIR {llava_full_bf16|llava_default_deep} SEED
#   python3 make_llava_case.py --check CASE_DIR      (run this implementation on an existing case, e.g. the
#                                                    golden llava_tiny, and print max rel error per tensor)
# Run with Debian's /usr/bin/python3 (torch 1.13, numpy).
import json, math, os, struct, sys
import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

# ----------------------------------------------------------------------------------------------------------
# safetensors I/O
# ----------------------------------------------------------------------------------------------------------
_NP = {"F32": np.float32, "I64": np.int64, "F64": np.float64, "U8": np.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        buf = raw[8 + n + s: 8 + n + e]
        if info["dtype"] == "BF16":  # widen exactly: bf16 bits are the top half of an f32
            u = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=_NP[info["dtype"]])
        out[name] = torch.from_numpy(arr.copy().reshape(info["shape"]))
    return out


def write_safetensors(path, tensors):
    """tensors: name -> (numpy array, dtype string). Largest element size first, then by name; header
    space-padded to a multiple of 8 so every tensor is aligned to its element size."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    order = sorted(tensors.items(), key=lambda kv: (-kv[1][0].itemsize, kv[0]))
    for name, (arr, dt) in order:
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = dict(dtype=dt, shape=list(arr.shape), data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def f32(t):
    return (t.detach().contiguous().numpy().astype(np.float32), "F32")


def i64(t):
    return (t.detach().contiguous().numpy().astype(np.int64), "I64")


def bf16_bits(t):
    # t holds values that are already exactly representable in bf16: keep the top 16 bits of the f32.
    u = t.detach().contiguous().numpy().astype(np.float32).view(np.uint32) >> 16
    return (u.astype(np.uint16), "BF16")


# ----------------------------------------------------------------------------------------------------------
# The model (float32 compute; bf16 checkpoints are widened to f32 first)
# ----------------------------------------------------------------------------------------------------------
class Llava:
    def __init__(self, cfg, W):
        self.cfg, self.W = cfg, W
        self.vc, self.tc = cfg["vision_config"], cfg["text_config"]
        tc = self.tc
        self.H = tc["hidden_size"]
        self.NH, self.NKV = tc["num_attention_heads"], tc["num_key_value_heads"]
        self.D = tc.get("head_dim") or self.H // self.NH
        self.L = tc["num_hidden_layers"]
        self.tied = tc.get("tie_word_embeddings", True)
        self.inv_freq = self._inv_freq()

    # ---- RoPE ----
    def _inv_freq(self):
        tc, D = self.tc, self.D
        inv = 1.0 / (tc["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
        rs = tc.get("rope_scaling")
        if rs is None:
            return inv
        kind = rs.get("rope_type", rs.get("type"))
        if kind != "llama3":
            raise SystemExit("unsupported rope_scaling " + str(rs))
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        orig = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        # long wavelengths (low frequencies) are divided by factor, short ones kept, the band between blended
        scaled = torch.where(wavelen > orig / lo, inv / factor, inv)
        s = (orig / wavelen - lo) / (hi - lo)
        blended = (1 - s) * scaled / factor + s * scaled
        between = (wavelen >= orig / hi) & (wavelen <= orig / lo)
        return torch.where(between, blended, scaled)

    def _rope(self, x, pos):  # x [B, heads, S, D]; half-split rotation
        ang = pos[:, None, :, None].float() * self.inv_freq  # [B, 1, S, D/2]
        cos = torch.cat([ang.cos(), ang.cos()], -1)
        sin = torch.cat([ang.sin(), ang.sin()], -1)
        h = self.D // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * cos + rot * sin

    # ---- helpers ----
    def lin(self, name, x):
        y = x @ self.W[name + ".weight"].T
        b = self.W.get(name + ".bias")
        return y + b if b is not None else y

    def ln(self, name, x):
        return F.layer_norm(x, (x.shape[-1],), self.W[name + ".weight"], self.W[name + ".bias"],
                            self.vc.get("layer_norm_eps", 1e-5))

    def rms(self, name, x):
        x = x.float()
        return self.W[name] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.tc["rms_norm_eps"]))

    @staticmethod
    def act(kind, x):
        if kind == "quick_gelu":
            return x * torch.sigmoid(1.702 * x)
        if kind == "gelu":
            return F.gelu(x)  # exact erf form
        if kind == "silu":
            return F.silu(x)
        raise SystemExit("unsupported activation " + kind)

    # ---- CLIP vision tower ----
    def vision_states(self, pix):
        vc, W = self.vc, self.W
        p = "vision_tower.vision_model."
        n = pix.shape[0]
        E = vc["hidden_size"]
        nh = vc["num_attention_heads"]
        d = E // nh
        patches = F.conv2d(pix, W[p + "embeddings.patch_embedding.weight"], stride=vc["patch_size"])
        patches = patches.flatten(2).transpose(1, 2)  # [n, grid^2, E], row-major over the patch grid
        cls = W[p + "embeddings.class_embedding"].view(1, 1, E).expand(n, 1, E)
        h = torch.cat([cls, patches], 1) + W[p + "embeddings.position_embedding.weight"][None]
        h = self.ln(p + "pre_layrnorm", h)
        states = [h]
        T = h.shape[1]
        for i in range(vc["num_hidden_layers"]):
            q_ = p + f"encoder.layers.{i}."
            x = self.ln(q_ + "layer_norm1", h)
            q = self.lin(q_ + "self_attn.q_proj", x).view(n, T, nh, d).transpose(1, 2)
            k = self.lin(q_ + "self_attn.k_proj", x).view(n, T, nh, d).transpose(1, 2)
            v = self.lin(q_ + "self_attn.v_proj", x).view(n, T, nh, d).transpose(1, 2)
            a = torch.softmax((q * d ** -0.5) @ k.transpose(-1, -2), -1) @ v  # no mask
            h = h + self.lin(q_ + "self_attn.out_proj", a.transpose(1, 2).reshape(n, T, E))
            x = self.ln(q_ + "layer_norm2", h)
            x = self.lin(q_ + "mlp.fc2", self.act(vc["hidden_act"], self.lin(q_ + "mlp.fc1", x)))
            h = h + x
            states.append(h)
        return states  # post_layernorm is not used by LLaVA

    def image_features(self, pix):
        states = self.vision_states(pix)
        layer = self.cfg["vision_feature_layer"]
        if not isinstance(layer, int):
            raise SystemExit("list-valued vision_feature_layer is not a 4.45 feature")
        sel = states[layer]  # Python indexing over the L+1 states (negative counts from the end)
        strategy = self.cfg["vision_feature_select_strategy"]
        if strategy == "default":
            sel = sel[:, 1:]
        elif strategy != "full":
            raise SystemExit("unknown strategy " + strategy)
        x = self.lin("multi_modal_projector.linear_1", sel)
        x = self.act(self.cfg["projector_hidden_act"], x)
        feats = self.lin("multi_modal_projector.linear_2", x)
        return states, sel, feats

    # ---- Llama text model ----
    def text(self, emb, amask, pos):
        W, NH, NKV, D = self.W, self.NH, self.NKV, self.D
        B, S, _ = emb.shape
        allowed = torch.tril(torch.ones(S, S, dtype=torch.bool))[None] & amask.bool()[:, None, :]
        bias = torch.zeros(B, 1, S, S).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
        h = emb
        hidden = [h]
        for i in range(self.L):
            pre = f"language_model.model.layers.{i}."
            x = self.rms(pre + "input_layernorm.weight", h)
            a = pre + "self_attn."
            q = self._rope(self.lin(a + "q_proj", x).view(B, S, NH, D).transpose(1, 2), pos)
            k = self._rope(self.lin(a + "k_proj", x).view(B, S, NKV, D).transpose(1, 2), pos)
            v = self.lin(a + "v_proj", x).view(B, S, NKV, D).transpose(1, 2)
            g = NH // NKV  # KV head j serves query heads j*g .. j*g+g-1
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + bias, -1, dtype=torch.float32)
            o = (att @ v).transpose(1, 2).reshape(B, S, NH * D)
            h = h + self.lin(a + "o_proj", o)
            x = self.rms(pre + "post_attention_layernorm.weight", h)
            m = pre + "mlp."
            h = h + self.lin(m + "down_proj", F.silu(self.lin(m + "gate_proj", x)) * self.lin(m + "up_proj", x))
            hidden.append(h)
        last = hidden.pop()
        out = self.rms("language_model.model.norm.weight", last)
        hidden.append(out)
        head = W["language_model.model.embed_tokens.weight"] if self.tied else W["language_model.lm_head.weight"]
        return out @ head.T, hidden, last

    def embed(self, ids, image_pos, feats):
        """image_pos: bool [B, S], the prompt's image-token positions. All images' features (images in
        order, each its tokens in order) fill the True positions in row-major (item, position) order."""
        emb = self.W["language_model.model.embed_tokens.weight"][ids].clone()
        flat = feats.reshape(-1, feats.shape[-1])
        if int(image_pos.sum()) != flat.shape[0]:
            raise SystemExit("image tokens %d != image features %d" % (int(image_pos.sum()), flat.shape[0]))
        emb[image_pos] = flat
        return emb

    def forward(self, ids, amask, pos, pix, image_pos=None):
        if image_pos is None:
            image_pos = ids == self.cfg["image_token_index"]
        vstates, sel, feats = self.image_features(pix)
        logits, hidden, last = self.text(self.embed(ids, image_pos, feats), amask, pos)
        return dict(logits=logits, hidden=hidden, last=last, vstates=vstates, sel=sel, feats=feats)

    def greedy(self, ids, amask, pos, pix, steps):
        """Greedy decoding without a KV cache: the whole sequence is recomputed each step. Generated tokens
        are never image tokens in the sense of the merge (with a cache they only ever see the embedding)."""
        B = ids.shape[0]
        image_pos = ids == self.cfg["image_token_index"]
        tokens, scores, margin = [], [], float("inf")
        for _ in range(steps):
            lg = self.forward(ids, amask, pos, pix, image_pos)["logits"][:, -1]
            top2 = torch.topk(lg, 2, -1).values
            margin = min(margin, float((top2[:, 0] - top2[:, 1]).min()))
            nxt = lg.argmax(-1)
            tokens.append(nxt)
            scores.append(lg)
            ids = torch.cat([ids, nxt[:, None]], 1)
            amask = torch.cat([amask, torch.ones(B, 1, dtype=torch.int64)], 1)
            pos = torch.cat([pos, pos.max(-1, keepdim=True).values + 1], 1)
            image_pos = torch.cat([image_pos, torch.zeros(B, 1, dtype=torch.bool)], 1)
        return torch.stack(tokens, 1), torch.stack(scores, 1), margin


def expected_tensors(model, out, tokens, scores):
    exp = {"logits": out["logits"], "layer_output.%d" % (model.L - 1): out["last"],
           "image_features_selected": out["sel"], "image_features": out["feats"],
           "greedy_tokens": tokens, "greedy_scores": scores}
    for i, h in enumerate(out["hidden"]):
        exp["hidden_states.%d" % i] = h
    for i, h in enumerate(out["vstates"]):
        exp["vision_hidden_states.%d" % i] = h
    return exp


# ----------------------------------------------------------------------------------------------------------
# --check: run on an existing case directory and compare with its expected.safetensors
# ----------------------------------------------------------------------------------------------------------
def check(case_dir):
    cfg = json.load(open(os.path.join(case_dir, "config.json")))
    W = read_safetensors(os.path.join(case_dir, "model.safetensors"))
    inp = read_safetensors(os.path.join(case_dir, "inputs.safetensors"))
    ref = read_safetensors(os.path.join(case_dir, "expected.safetensors"))
    model = Llava(cfg, W)
    ids, amask, pos, pix = inp["input_ids"], inp["attention_mask"], inp["position_ids"], inp["pixel_values"]
    with torch.no_grad():
        out = model.forward(ids, amask, pos, pix)
        steps = ref["greedy_tokens"].shape[1]
        tokens, scores, margin = model.greedy(ids, amask, pos, pix, steps)
    got = expected_tensors(model, out, tokens, scores)
    real = amask.bool()
    worst, ok = 0.0, True
    for name in sorted(ref):
        e, g = ref[name], got.get(name)
        if g is None:
            print("%-28s MISSING in this implementation" % name)
            ok = False
            continue
        if tuple(e.shape) != tuple(g.shape):
            print("%-28s shape %s != expected %s" % (name, tuple(g.shape), tuple(e.shape)))
            ok = False
            continue
        if e.dtype == torch.int64:
            same = bool(torch.equal(e, g))
            ok &= same
            print("%-28s %s" % (name, "exact" if same else "MISMATCH %s vs %s" % (g.tolist(), e.tolist())))
            continue
        if e.dim() >= 2 and tuple(e.shape[:2]) == tuple(real.shape) and not name.startswith("greedy"):
            e, g = e[real], g[real]  # real tokens only
        rel = float((g - e).abs().max() / e.abs().max())
        worst = max(worst, rel)
        ok &= rel <= 1e-5
        print("%-28s rel %.3e  (max|exp| %.3g)" % (name, rel, float(e.abs().max())))
    print("greedy min top1 margin (this implementation): %.4g" % margin)
    print("worst rel %.3e -> %s" % (worst, "PASS" if ok else "FAIL"))
    return ok


# ----------------------------------------------------------------------------------------------------------
# Case generation
# ----------------------------------------------------------------------------------------------------------
def common_config_fields():
    """The PretrainedConfig fields transformers 4.45 writes for every nested config (their defaults)."""
    return {
        "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
        "begin_suppress_tokens": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
        "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False,
        "encoder_no_repeat_ngram_size": 0, "exponential_decay_length_penalty": None, "finetuning_task": None,
        "forced_bos_token_id": None, "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "is_decoder": False, "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
        "length_penalty": 1.0, "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0,
        "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1, "output_attentions": False,
        "output_hidden_states": False, "output_scores": False, "prefix": None, "problem_type": None,
        "pruned_heads": {}, "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
        "return_dict_in_generate": False, "sep_token_id": None, "suppress_tokens": None,
        "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False, "tie_encoder_decoder": False,
        "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False,
        "typical_p": 1.0, "use_bfloat16": False,
    }


def make_config(variant):
    if variant == "llava_full_bf16":
        vis = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   image_size=42, patch_size=14, hidden_act="gelu", projection_dim=32)
        txt = dict(hidden_size=40, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=1, head_dim=10, vocab_size=300, rope_theta=500000.0, rms_norm_eps=1e-5,
                   rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 32, "rope_type": "llama3"},
                   tie_word_embeddings=True, max_position_embeddings=256)
        top = dict(image_token_index=299, image_seq_length=10, projector_hidden_act="gelu",
                   vision_feature_layer=1, vision_feature_select_strategy="full", torch_dtype="bfloat16")
    elif variant == "llava_default_deep":
        vis = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=2,
                   image_size=56, patch_size=14, hidden_act="quick_gelu", projection_dim=32)
        txt = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                   num_key_value_heads=4, head_dim=8, vocab_size=256, rope_theta=10000.0, rms_norm_eps=1e-6,
                   rope_scaling=None, tie_word_embeddings=False, max_position_embeddings=512)
        top = dict(image_token_index=255, image_seq_length=16, projector_hidden_act="gelu",
                   vision_feature_layer=-3, vision_feature_select_strategy="default", torch_dtype="float32")
    else:
        raise SystemExit("unknown variant " + variant)
    tc = common_config_fields()
    tc.update(attention_bias=False, attention_dropout=0.0, hidden_act="silu", initializer_range=0.02,
              mlp_bias=False, model_type="llama", pretraining_tp=1, use_cache=True, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)
    tc.update(txt)
    vc = common_config_fields()
    vc.update(attention_dropout=0.0, initializer_factor=1.0, initializer_range=0.02, layer_norm_eps=1e-5,
              model_type="clip_vision_model", num_channels=3, bos_token_id=None, eos_token_id=None,
              pad_token_id=None, tie_word_embeddings=True)
    vc.update(vis)
    cfg = dict(architectures=["LlavaForConditionalGeneration"], ignore_index=-100, model_type="llava",
               text_config=tc, vision_config=vc, transformers_version="4.45.2")
    cfg.update(top)
    return cfg


def make_weights(cfg, gen):
    vc, tc = cfg["vision_config"], cfg["text_config"]
    bf16 = cfg["torch_dtype"] == "bfloat16"
    W = {}

    def p(name, *shape, scale=None, offset=0.0):
        s = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
        t = torch.randn(*shape, generator=gen) * s + offset
        if bf16:
            t = t.to(torch.bfloat16).to(torch.float32)
        W[name] = t

    E, I, C, P = vc["hidden_size"], vc["intermediate_size"], vc["num_channels"], vc["patch_size"]
    T = (vc["image_size"] // P) ** 2 + 1
    v = "vision_tower.vision_model."
    p(v + "embeddings.class_embedding", E, scale=0.5)
    p(v + "embeddings.patch_embedding.weight", E, C, P, P, scale=1.0 / math.sqrt(C * P * P))
    p(v + "embeddings.position_embedding.weight", T, E, scale=0.5)
    for n in ["pre_layrnorm", "post_layernorm"]:
        p(v + n + ".weight", E, scale=0.1, offset=1.0)
        p(v + n + ".bias", E, scale=0.1)
    for i in range(vc["num_hidden_layers"]):
        pre = v + f"encoder.layers.{i}."
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            p(pre + f"self_attn.{n}.weight", E, E)
            p(pre + f"self_attn.{n}.bias", E, scale=0.1)
        p(pre + "mlp.fc1.weight", I, E)
        p(pre + "mlp.fc1.bias", I, scale=0.1)
        p(pre + "mlp.fc2.weight", E, I)
        p(pre + "mlp.fc2.bias", E, scale=0.1)
        for n in ["layer_norm1", "layer_norm2"]:
            p(pre + n + ".weight", E, scale=0.1, offset=1.0)
            p(pre + n + ".bias", E, scale=0.1)
    H, TI, V = tc["hidden_size"], tc["intermediate_size"], tc["vocab_size"]
    NH, NKV, D = tc["num_attention_heads"], tc["num_key_value_heads"], tc["head_dim"]
    p("multi_modal_projector.linear_1.weight", H, E)
    p("multi_modal_projector.linear_1.bias", H, scale=0.1)
    p("multi_modal_projector.linear_2.weight", H, H)
    p("multi_modal_projector.linear_2.bias", H, scale=0.1)
    lm = "language_model.model."
    # tied: a smaller embedding scale keeps the residual stream from being dominated by the input token's own
    # embedding (otherwise greedy decoding just repeats the last token)
    p(lm + "embed_tokens.weight", V, H, scale=0.3 if tc["tie_word_embeddings"] else 1.0)
    for i in range(tc["num_hidden_layers"]):
        pre = lm + f"layers.{i}."
        p(pre + "input_layernorm.weight", H, scale=0.1, offset=1.0)
        p(pre + "post_attention_layernorm.weight", H, scale=0.1, offset=1.0)
        p(pre + "self_attn.q_proj.weight", NH * D, H)
        p(pre + "self_attn.k_proj.weight", NKV * D, H)
        p(pre + "self_attn.v_proj.weight", NKV * D, H)
        p(pre + "self_attn.o_proj.weight", H, NH * D)
        p(pre + "mlp.gate_proj.weight", TI, H)
        p(pre + "mlp.up_proj.weight", TI, H)
        p(pre + "mlp.down_proj.weight", H, TI)
    p(lm + "norm.weight", H, scale=0.1, offset=1.0)
    if not tc["tie_word_embeddings"]:
        # tied weights are saved once by save_pretrained: a tied checkpoint has no lm_head entry
        p("language_model.lm_head.weight", V, H)
    return W


def make_inputs(cfg, gen):
    tc, vc = cfg["text_config"], cfg["vision_config"]
    IMG, n = cfg["image_token_index"], cfg["image_seq_length"]
    size = vc["image_size"]
    bos, pad = tc["bos_token_id"], tc["pad_token_id"]

    def text(k):  # ordinary tokens: not pad/bos/eos, not the image token
        return torch.randint(3, IMG, (k,), generator=gen).tolist()

    if cfg["vision_feature_select_strategy"] == "full":
        # item 0: BOS t t [image 0] t t t [image 1] t t t (no padding)
        # item 1: 4 pads, BOS t t t [image 2] t ... t
        row0 = [bos] + text(2) + [IMG] * n + text(3) + [IMG] * n + text(3)
        S = len(row0)
        row1 = [pad] * 4 + [bos] + text(3) + [IMG] * n
        row1 += text(S - len(row1))
        rows, pads, layout = [row0, row1], [0, 4], [[0, 1], [2]]
    else:
        # one item: BOS t t t t t [image 0] t t t t t t
        rows, pads, layout = [[bos] + text(5) + [IMG] * n + text(6)], [0], [[0]]
    ids = torch.tensor(rows, dtype=torch.int64)
    amask = torch.ones_like(ids)
    for b, k in enumerate(pads):
        amask[b, :k] = 0
    pos = (amask.cumsum(-1) - 1).masked_fill(amask == 0, 1)
    num_images = sum(len(x) for x in layout)
    pix = torch.randn(num_images, vc["num_channels"], size, size, generator=gen)
    return ids, amask, pos, pix, pads, layout


def describe(shape, dtype, meaning):
    return {"shape": list(shape), "dtype": dtype, "meaning": meaning}


def generate(out_dir, variant, seed, steps=6):
    cfg = make_config(variant)
    tc = cfg["text_config"]
    banned = {tc["eos_token_id"], cfg["image_token_index"]}
    for attempt in range(100):
        gen = torch.Generator().manual_seed(seed + 1000 * attempt)
        W = make_weights(cfg, gen)
        ids, amask, pos, pix, pads, layout = make_inputs(cfg, gen)
        model = Llava(cfg, W)
        with torch.no_grad():
            out = model.forward(ids, amask, pos, pix)
            tokens, scores, margin = model.greedy(ids, amask, pos, pix, steps)
        # clear greedy margins, no EOS / image token generated, and not a degenerate repetition of one token
        varied = all(len(set(row)) >= 3 for row in tokens.tolist())
        if margin >= 1e-2 and varied and not (set(tokens.flatten().tolist()) & banned):
            break
    else:
        raise SystemExit("no seed gave clear greedy margins")
    step0 = float((scores[:, 0] - out["logits"][:, -1]).abs().max())
    assert step0 == 0.0, step0
    # self-consistency of batching: each item run alone, without its padding and with only its own images,
    # must give the same logits on its real tokens (checks the mask, positions and the scatter order)
    first = 0
    for b, imgs in enumerate(layout):
        keep = amask[b].bool()
        solo_ids, solo_pos = ids[b][keep][None], pos[b][keep][None]
        with torch.no_grad():
            solo = model.forward(solo_ids, torch.ones_like(solo_ids), solo_pos, pix[first:first + len(imgs)])
        first += len(imgs)
        ref = out["logits"][b][keep]
        rel = float((solo["logits"][0] - ref).abs().max() / ref.abs().max())
        print("item %d alone vs in batch: logits rel %.2e" % (b, rel))
        assert rel < 1e-5, rel

    os.makedirs(out_dir, exist_ok=True)
    bf16 = cfg["torch_dtype"] == "bfloat16"
    write_safetensors(os.path.join(out_dir, "model.safetensors"),
                      {k: (bf16_bits(t) if bf16 else f32(t)) for k, t in W.items()})
    inputs = {"input_ids": ids, "attention_mask": amask, "position_ids": pos, "pixel_values": pix}
    write_safetensors(os.path.join(out_dir, "inputs.safetensors"),
                      {k: (f32(t) if t.is_floating_point() else i64(t)) for k, t in inputs.items()})
    exp = expected_tensors(model, out, tokens, scores)
    write_safetensors(os.path.join(out_dir, "expected.safetensors"),
                      {k: (f32(t) if t.is_floating_point() else i64(t)) for k, t in exp.items()})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gcfg = {"_from_model_config": True, "bos_token_id": tc["bos_token_id"], "eos_token_id": tc["eos_token_id"],
            "pad_token_id": tc["pad_token_id"], "transformers_version": "4.45.2"}
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        f.write(json.dumps(gcfg, indent=2, sort_keys=True) + "\n")

    vc = cfg["vision_config"]
    B, S = ids.shape
    nimg = pix.shape[0]
    Lv, L = vc["num_hidden_layers"], tc["num_hidden_layers"]
    T = (vc["image_size"] // vc["patch_size"]) ** 2 + 1
    strategy, layer = cfg["vision_feature_select_strategy"], cfg["vision_feature_layer"]
    meta = {
        "hf_class": "LlavaForConditionalGeneration",
        "reference": "HELD-OUT case, not produced by transformers: an independent PyTorch implementation of the "
                     "transformers 4.45 LlavaForConditionalGeneration semantics (tests/data/heldout/"
                     "make_llava_case.py %s %d), torch %s on CPU, float32 compute" % (variant, seed, torch.__version__),
        "weights_dtype": "bfloat16 (computed in f32 from exactly these bf16 values)" if bf16 else "float32",
        "num_parameters": int(sum(t.numel() for t in W.values())),
        "num_weight_tensors": len(W),
        "seed": seed, "seed_attempt": attempt,
        "greedy_steps": steps,
        "greedy_min_top1_margin": margin,
        "greedy_decoding": "without a KV cache: the whole sequence is recomputed each step (pixel_values and the "
                           "prompt's image-token positions unchanged, new tokens appended with mask 1, positions "
                           "continuing from max+1); step 0 equals logits[:, -1]",
        "images": "none: pixel_values are random standard-normal floats, no image processor involved",
        "image_layout": {"per_item_images": layout, "left_padding": pads,
                         "rule": "all images' features (image order, then token order) fill the image-token "
                                 "positions of the batch in row-major (item, position) order"},
        "tied_embeddings": bool(tc["tie_word_embeddings"]),
        "notes": ("text_config.tie_word_embeddings is true and model.safetensors has no "
                  "language_model.lm_head.weight: logits use language_model.model.embed_tokens.weight"
                  if tc["tie_word_embeddings"] else "untied: language_model.lm_head.weight is used"),
        "reference_step0_vs_prefill_last_logits_max_abs_diff": step0,
        "inputs": {
            "input_ids": describe(ids.shape, "I64", "token ids with each image already expanded to "
                                  "image_seq_length image tokens (processor-side expansion), left padded"),
            "attention_mask": describe(amask.shape, "I64", "1 = real token, 0 = left padding"),
            "position_ids": describe(pos.shape, "I64", "cumsum(attention_mask)-1, and 1 on padding"),
            "pixel_values": describe(pix.shape, "F32", "random normal (num_images_total, 3, image_size, "
                                     "image_size), images in batch order; no image processor"),
        },
        "expected": {
            "logits": describe((B, S, tc["vocab_size"]), "F32", "prefill logits for every position"),
        },
    }
    e = meta["expected"]
    for i in range(Lv + 1):
        e["vision_hidden_states.%d" % i] = describe((nimg, T, vc["hidden_size"]), "F32",
                                                    "CLIP hidden_states[i]: i=0 after pre_layrnorm, i=k output of "
                                                    "encoder layer k (no post_layernorm)")
    nf = T - 1 if strategy == "default" else T
    e["image_features_selected"] = describe((nimg, nf, vc["hidden_size"]), "F32",
                                            "vision_hidden_states[%d] %s" % (layer, "with the CLS token dropped "
                                            "('default')" if strategy == "default" else "with the CLS token kept "
                                            "('full')"))
    e["image_features"] = describe((nimg, nf, tc["hidden_size"]), "F32",
                                   "multi_modal_projector output, written over the image-token embeddings in order")
    for i in range(L + 1):
        e["hidden_states.%d" % i] = describe((B, S, tc["hidden_size"]), "F32",
                                             "i=0 input embeddings (image features written in), i=1..L-1 output "
                                             "of decoder layer i-1, i=L last layer output AFTER the final norm")
    e["layer_output.%d" % (L - 1)] = describe((B, S, tc["hidden_size"]), "F32",
                                              "last decoder layer output before the final norm")
    e["greedy_tokens"] = describe((B, steps), "I64", "%d greedy tokens (no EOS, no image token; seed retried until "
                                 "each item has >= 3 distinct tokens)" % steps)
    e["greedy_scores"] = describe((B, steps, tc["vocab_size"]), "F32", "logits of each greedy step")
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        f.write(json.dumps(meta, indent=1) + "\n")
    print(variant, "seed", seed, "attempt", attempt, "greedy margin %.3e" % margin, "tokens", tokens.tolist())
    # round trip: re-read the files just written and re-run
    assert check(out_dir)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2]) else 1)
    if len(sys.argv) != 4:
        raise SystemExit(__doc__ or "usage: make_llava_case.py OUT_DIR VARIANT SEED | --check CASE_DIR")
    generate(sys.argv[1], sys.argv[2], int(sys.argv[3]))
