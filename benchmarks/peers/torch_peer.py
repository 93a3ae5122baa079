#!/usr/bin/python3
"""The PyTorch peer of fusionlm-run: the same LlamaForCausalLM / LlavaForConditionalGeneration function in plain
PyTorch (1.13: no scaled_dot_product_attention, no transformers), on the same safetensors checkpoint folder.

    torch_peer.py -m DIR --prompt-tokens N [-n G] [-t T] [--dtype bf16|f32] [--gemv] [--image FILE]
    torch_peer.py -m DIR --prompt-ids 128000,128006,... [-n G] [--dtype f32] [--image FILE]

Prints one JSON line with fusionlm-run --json's keys (prompt_tokens, generated_tokens, vision_s,
prefill_tokens_per_s, decode_tokens_per_s) plus prefill_s, decode_s, the greedy token ids and the setup.

What runs, as a PyTorch user who loads the checkpoint and calls model.to(torch.bfloat16) would compute it:
- dtype bf16 keeps the checkpoint's bf16 tensors and computes in bf16 as transformers' eager code does (RMSNorm
  and softmax in f32, everything else bf16); --dtype f32 upcasts every weight to f32 once at load.
- Decoder: Llama blocks (RMSNorm, q/k/v with llama3-scaled RoPE, grouped-query attention, o_proj, SiLU MLP),
  tied or separate lm_head, logits of the last position only. The KV cache is PREALLOCATED for prompt + new
  tokens and written in place (not concatenated per step as transformers' DynamicCache does); grouped-query
  attention reshapes the query heads onto their shared KV head instead of copying K/V per query head.
- Vision (llava): the CLIP tower from an already preprocessed pixel tensor (class + patch embeddings,
  pre_layrnorm, the encoder layers up to vision_feature_layer, CLS dropped for "default"), then the gelu MLP
  projector; the features replace the image tokens' embeddings. transformers' LLaVA runs all 24 tower layers
  and keeps hidden_states[-2]; this peer, like fusionlm, stops at the layer it needs.
- Timing (time.perf_counter): vision_s = tower + projector for one image; prefill = the whole prompt through
  the decoder to the last position's logits; decode = sampling the first token from the prefill's logits and
  then G - 1 single-token steps, decode_tokens_per_s = (G - 1) / that time, as fusionlm-run counts.
  Greedy (argmax) sampling. Before timing, one short warm-up (a 16-token prefill and one decode step on a
  scratch cache, and the vision embeddings + first encoder layer) starts the thread pools and the kernels
  (the weights are in memory already: the load reads the whole file). A full-size warm-up would double the
  run time in bf16, where torch 1.13 has no fast CPU kernels on machines without AVX-512.
- With --prompt-tokens N the prompt is N token ids (speed does not depend on their values: no op here
  branches on the data); for llava, image_seq_length of them are the image token, after 4 text tokens, as in
  "<|begin_of_text|>USER: <image>\n...". With --prompt-ids the given ids are used (one <image> token per
  image is expanded to image_seq_length); this is the correctness check against fusionlm-run's greedy tokens.
- Linear layers are F.linear, as nn.Linear computes them. For one row (decode) that is a GEMM with one
  column, which Debian's OpenBLAS 0.3.21 runs at a fraction of its GEMV speed (no GEMM->GEMV forwarding);
  --gemv computes one-row linears with torch.mv instead (f32: 3-4x faster per matrix here; bf16 has no
  fast kernel either way on CPUs without AVX-512), the stronger decode peer a PyTorch user could write.
- Threads: torch.set_num_threads(T) and OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = T, set before torch loads
  (Debian's torch calls OpenBLAS for f32 matmul, which sizes its own thread pool from the environment).
"""
import argparse
import json
import math
import os
import struct
import sys
import time


def parse_args(argv):
    ap = argparse.ArgumentParser(description="PyTorch peer of fusionlm-run (see the module docstring)")
    ap.add_argument("-m", "--model", required=True, help="checkpoint folder (config.json, model.safetensors)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt-tokens", type=int, help="prompt length in tokens (ids are arbitrary)")
    src.add_argument("--prompt-ids", help="comma-separated prompt token ids")
    ap.add_argument("-n", "--n-predict", type=int, default=32, help="tokens to generate (greedy)")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--image", help="image file (llava): preprocessed as CLIPImageProcessor does; "
                                    "default a random pixel tensor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gemv", action="store_true", help="one-row linears with torch.mv instead of F.linear")
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error("-t must be at least 1")
    if a.n_predict < 1:
        ap.error("-n must be at least 1")
    return a


# As a script: the thread environment must be set before torch loads. As a module (check_reference.py):
# F.linear everywhere, threads as the importer set them.
GEMV = False
if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])
    GEMV = ARGS.gemv
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread environment is set)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ------------------------------------------------------------------------------------------------------------
# Checkpoint
# ------------------------------------------------------------------------------------------------------------
_DTYPES = {"BF16": (np.int16, torch.bfloat16), "F16": (np.float16, None), "F32": (np.float32, None),
           "I64": (np.int64, None)}


def load_safetensors(path, dtype):
    """name -> tensor. bf16 data is read as int16 and reinterpreted, so it stays exactly the file's bf16;
    floating tensors are converted to dtype (f32 upcasts), integer ones kept."""
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise SystemExit("%s: tensor %s has unsupported dtype %s" % (path, name, info["dtype"]))
            np_type, view = _DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            f.seek(base + begin)
            arr = np.fromfile(f, dtype=np_type, count=(end - begin) // np.dtype(np_type).itemsize)
            t = torch.from_numpy(arr).reshape(info["shape"])
            if view is not None:
                t = t.view(view)
            out[name] = t.to(dtype) if t.is_floating_point() else t
    return out


def load_checkpoint(folder, dtype):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(os.path.join(folder, "model.safetensors.index.json")) as f:
            files = sorted({os.path.join(folder, v) for v in json.load(f)["weight_map"].values()})
    W = {}
    for path in files:
        W.update(load_safetensors(path, dtype))
    return config, W


def linear(x, w, b=None):
    """F.linear, or with --gemv a matrix-vector product when x is one row."""
    if GEMV and x.numel() == x.shape[-1]:
        y = torch.mv(w, x.reshape(-1))
        return (y if b is None else y + b).view(*x.shape[:-1], w.shape[0])
    return F.linear(x, w, b)


# ------------------------------------------------------------------------------------------------------------
# Llama decoder
# ------------------------------------------------------------------------------------------------------------
def llama3_inv_freq(tc, head_dim):
    inv = 1.0 / (tc.get("rope_theta", 10000.0) ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rs = tc.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind != "llama3":
        raise SystemExit("rope_scaling type %r is not supported by the peer" % kind)
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    # wavelengths longer than old/lo are slowed by factor, shorter than old/hi kept, the band between blended
    scaled = torch.where(wavelen > old / lo, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    between = (wavelen >= old / hi) & (wavelen <= old / lo)
    return torch.where(between, blended, scaled)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Llama:
    def __init__(self, tc, W, prefix, dtype):
        self.W, self.p, self.dtype = W, prefix, dtype
        self.H = tc["hidden_size"]
        self.NH = tc["num_attention_heads"]
        self.NKV = tc.get("num_key_value_heads") or self.NH
        self.D = tc.get("head_dim") or self.H // self.NH
        self.L = tc["num_hidden_layers"]
        self.eps = tc.get("rms_norm_eps", 1e-6)
        self.act = {"silu": F.silu}[tc.get("hidden_act", "silu")]
        if tc.get("attention_bias") or tc.get("mlp_bias"):
            raise SystemExit("attention_bias / mlp_bias are not supported by the peer")
        self.embed = W[prefix + "model.embed_tokens.weight"]
        tied = tc.get("tie_word_embeddings", False)
        self.lm_head = self.embed if tied else W[prefix + "lm_head.weight"]
        self.inv_freq = llama3_inv_freq(tc, self.D)
        self.layers = []
        for i in range(self.L):
            q = prefix + "model.layers.%d." % i
            self.layers.append({k: W[q + n] for k, n in [
                ("ln1", "input_layernorm.weight"), ("ln2", "post_attention_layernorm.weight"),
                ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"),
                ("v", "self_attn.v_proj.weight"), ("o", "self_attn.o_proj.weight"),
                ("gate", "mlp.gate_proj.weight"), ("up", "mlp.up_proj.weight"), ("down", "mlp.down_proj.weight")]})
        self.norm = W[prefix + "model.norm.weight"]

    def new_cache(self, length):
        shape = (1, self.NKV, length, self.D)
        return [(torch.zeros(shape, dtype=self.dtype), torch.zeros(shape, dtype=self.dtype)) for _ in range(self.L)]

    def rms(self, x, w):  # transformers' LlamaRMSNorm: statistics in f32, back to the input dtype, times w
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * h.to(x.dtype)

    def rope(self, start, S):
        pos = torch.arange(start, start + S, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def attention(self, x, lw, cache, start, cos, sin):
        B, S, _ = x.shape
        NH, NKV, D = self.NH, self.NKV, self.D
        g = NH // NKV
        q = linear(x, lw["q"]).view(B, S, NH, D).transpose(1, 2)
        k = linear(x, lw["k"]).view(B, S, NKV, D).transpose(1, 2)
        v = linear(x, lw["v"]).view(B, S, NKV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        kc, vc = cache
        T = start + S
        kc[:, :, start:T] = k
        vc[:, :, start:T] = v
        K, V = kc[:, :, :T], vc[:, :, :T]
        # query head h uses KV head h // g: group the g query heads of a KV head as one block of g*S rows
        qg = q.reshape(B, NKV, g * S, D)
        scores = torch.matmul(qg, K.transpose(2, 3)) / math.sqrt(D)
        if S > 1:
            allowed = torch.arange(T)[None, :] <= torch.arange(start, T)[:, None]  # [S, T] causal
            mask = torch.zeros(S, T, dtype=scores.dtype).masked_fill(~allowed, torch.finfo(scores.dtype).min)
            scores = (scores.view(B, NKV, g, S, T) + mask).view(B, NKV, g * S, T)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, V).view(B, NH, S, D).transpose(1, 2).reshape(B, S, NH * D)
        return linear(out, lw["o"])

    def forward(self, embeds, cache, start):
        """embeds [1, S, H] at positions start..start+S-1; fills the cache; returns the last position's
        logits (f32, [vocab])."""
        S = embeds.shape[1]
        cos, sin = self.rope(start, S)
        h = embeds
        for lw, c in zip(self.layers, cache):
            h = h + self.attention(self.rms(h, lw["ln1"]), lw, c, start, cos, sin)
            x = self.rms(h, lw["ln2"])
            h = h + linear(self.act(linear(x, lw["gate"])) * linear(x, lw["up"]), lw["down"])
        last = self.rms(h[:, -1:], self.norm)
        return linear(last, self.lm_head)[0, 0].float()

    def embed_ids(self, ids):
        return F.embedding(torch.tensor([ids], dtype=torch.int64), self.embed)


# ------------------------------------------------------------------------------------------------------------
# CLIP vision tower + LLaVA projector
# ------------------------------------------------------------------------------------------------------------
class LlavaVision:
    def __init__(self, config, W, dtype):
        vc = config["vision_config"]
        self.W, self.dtype = W, dtype
        self.E = vc.get("hidden_size", 1024)
        self.heads = vc.get("num_attention_heads", 16)
        self.P = vc.get("patch_size", 14)
        self.size = vc.get("image_size", 336)
        self.eps = vc.get("layer_norm_eps", 1e-5)
        n_layers = vc.get("num_hidden_layers", 24)
        act = vc.get("hidden_act", "quick_gelu")
        if act == "quick_gelu":
            self.act = lambda x: x * torch.sigmoid(1.702 * x)
        elif act == "gelu":
            self.act = F.gelu
        else:
            raise SystemExit("vision hidden_act %r is not supported by the peer" % act)
        layer = config.get("vision_feature_layer", -2)
        self.layers_run = layer if layer >= 0 else n_layers + 1 + layer  # hidden_states[layer] = after this many
        self.drop_cls = config.get("vision_feature_select_strategy", "default") == "default"
        proj_act = config.get("projector_hidden_act", "gelu")
        if proj_act != "gelu":
            raise SystemExit("projector_hidden_act %r is not supported by the peer" % proj_act)
        self.p = "vision_tower.vision_model."

    def lin(self, name, x):
        return F.linear(x, self.W[name + ".weight"], self.W.get(name + ".bias"))

    def ln(self, name, x):
        return F.layer_norm(x, (self.E,), self.W[name + ".weight"], self.W[name + ".bias"], self.eps)

    def features(self, pixels, layers=None):
        """pixels [n, 3, size, size] -> projected features [n, tokens, text hidden]."""
        W, p, E = self.W, self.p, self.E
        n = pixels.shape[0]
        x = F.conv2d(pixels.to(self.dtype), W[p + "embeddings.patch_embedding.weight"], stride=self.P)
        x = x.flatten(2).transpose(1, 2)
        cls = W[p + "embeddings.class_embedding"].view(1, 1, E).expand(n, 1, E)
        h = torch.cat([cls, x], dim=1) + W[p + "embeddings.position_embedding.weight"][None]
        h = self.ln(p + "pre_layrnorm", h)
        T, nh = h.shape[1], self.heads
        d = E // nh
        for i in range(self.layers_run if layers is None else layers):
            q_ = p + "encoder.layers.%d." % i
            x = self.ln(q_ + "layer_norm1", h)
            # transformers' CLIPAttention: q scaled before the product, softmax in the compute dtype
            q = (self.lin(q_ + "self_attn.q_proj", x) * d ** -0.5).view(n, T, nh, d).transpose(1, 2)
            k = self.lin(q_ + "self_attn.k_proj", x).view(n, T, nh, d).transpose(1, 2)
            v = self.lin(q_ + "self_attn.v_proj", x).view(n, T, nh, d).transpose(1, 2)
            a = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1), v)
            h = h + self.lin(q_ + "self_attn.out_proj", a.transpose(1, 2).reshape(n, T, E))
            x = self.ln(q_ + "layer_norm2", h)
            h = h + self.lin(q_ + "mlp.fc2", self.act(self.lin(q_ + "mlp.fc1", x)))
        if self.drop_cls:
            h = h[:, 1:]
        x = F.gelu(self.lin("multi_modal_projector.linear_1", h))
        return self.lin("multi_modal_projector.linear_2", x)


def clip_pixels(path, size):
    """CLIPImageProcessor as llava-1.5 configures it: RGB, bicubic resize of the shortest edge to `size`,
    center crop, rescale 1/255, normalize with the CLIP mean / std. -> [1, 3, size, size] f32."""
    from PIL import Image
    img = Image.open(path).convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    img = img.resize((nw, nh), resample=Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    arr = np.asarray(img, dtype=np.uint8)[top:top + size, left:left + size]
    x = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------
def prompt_ids(a, vocab, image_token, image_seq):
    if a.prompt_ids is not None:
        ids = [int(s) for s in a.prompt_ids.split(",") if s.strip()]
        if image_token is not None and ids.count(image_token) == 1:
            at = ids.index(image_token)
            ids = ids[:at] + [image_token] * image_seq + ids[at + 1:]
        return ids
    gen = torch.Generator().manual_seed(a.seed)
    ordinary = min(vocab, 128000)  # below the Llama 3 special tokens
    n = a.prompt_tokens
    if image_token is not None:
        if n < image_seq + 6:
            raise SystemExit("--prompt-tokens %d is too short for %d image tokens" % (n, image_seq))
        text = torch.randint(0, ordinary, (n - image_seq,), generator=gen).tolist()
        return text[:4] + [image_token] * image_seq + text[4:]
    return torch.randint(0, ordinary, (n,), generator=gen).tolist()


def main(a):
    torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    t_load = time.perf_counter()
    config, W = load_checkpoint(a.model, dtype)
    load_s = time.perf_counter() - t_load
    model_type = config.get("model_type")
    if model_type == "llama":
        tc, prefix, vision = config, "", None
    elif model_type == "llava":
        tc, prefix = config["text_config"], "language_model."
        vision = LlavaVision(config, W, dtype)
    else:
        raise SystemExit("model_type %r is not supported by the peer (llama, llava)" % model_type)
    lm = Llama(tc, W, prefix, dtype)
    image_token = config.get("image_token_index") if vision else None
    image_seq = config.get("image_seq_length", 576) if vision else 0
    ids = prompt_ids(a, tc["vocab_size"], image_token, image_seq)
    S, G = len(ids), a.n_predict
    pixels = None
    if vision:
        pixels = clip_pixels(a.image, vision.size) if a.image else \
            torch.randn(1, 3, vision.size, vision.size, generator=torch.Generator().manual_seed(a.seed))
        if ids.count(image_token) != image_seq:
            raise SystemExit("the prompt has %d image tokens, one image needs %d" % (ids.count(image_token), image_seq))

    with torch.inference_mode():
        # warm-up: thread pools, allocator, the kernels' first-call setup
        if vision:
            vision.features(pixels, layers=1)
        scratch = lm.new_cache(17)
        lm.forward(lm.embed_ids(ids[:16]), scratch, 0)
        lm.forward(lm.embed_ids(ids[:1]), scratch, 16)
        del scratch

        vision_s = 0.0
        embeds = lm.embed_ids(ids)
        if vision:
            t = time.perf_counter()
            feats = vision.features(pixels)
            vision_s = time.perf_counter() - t
            embeds[0, torch.tensor(ids) == image_token] = feats.reshape(-1, feats.shape[-1]).to(embeds.dtype)

        cache = lm.new_cache(S + G)
        t = time.perf_counter()
        logits = lm.forward(embeds, cache, 0)
        prefill_s = time.perf_counter() - t

        tokens = []
        t = time.perf_counter()
        for i in range(G):
            token = int(torch.argmax(logits))
            tokens.append(token)
            if i + 1 < G:
                logits = lm.forward(lm.embed_ids([token]), cache, S + i)
        decode_s = time.perf_counter() - t

    out = {
        "prompt_tokens": S,
        "generated_tokens": G,
        "load_s": load_s,
        "vision_s": vision_s,
        "prefill_tokens_per_s": S / prefill_s,
        "decode_tokens_per_s": (G - 1) / decode_s if G > 1 else 0.0,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "tokens": tokens,
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "kv_cache": "preallocated",
        "one_row_linear": "torch.mv" if a.gemv else "F.linear",
        "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(ARGS)
