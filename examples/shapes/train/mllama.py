"""PyTorch MllamaForConditionalGeneration: Hugging Face parameter names and forward semantics
(transformers 4.45 modeling_mllama.py), restricted to what an Mllama config needs for inference and
training: no KV cache (greedy decoding re-runs the prefix), eager attention, float32."""
import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Vision encoder


class VisionAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)

    def forward(self, h, mask):
        b, n, _ = h.shape
        q = self.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        return self.o_proj(out)


class VisionMLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.fc1 = nn.Linear(hidden, inter)
        self.fc2 = nn.Linear(inter, hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class VisionEncoderLayer(nn.Module):
    def __init__(self, cfg, is_gated):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.is_gated = is_gated
        self.self_attn = VisionAttention(hidden, cfg["attention_heads"])
        self.mlp = VisionMLP(hidden, cfg["intermediate_size"])
        self.input_layernorm = nn.LayerNorm(hidden, eps=cfg["norm_eps"])
        self.post_attention_layernorm = nn.LayerNorm(hidden, eps=cfg["norm_eps"])
        if is_gated:
            self.gate_attn = nn.Parameter(torch.ones(1) * math.pi / 4)
            self.gate_ffn = nn.Parameter(torch.ones(1) * math.pi / 4)

    def forward(self, h, mask):
        a = self.self_attn(self.input_layernorm(h), mask)
        if self.is_gated:
            a = self.gate_attn.tanh() * a
        h = h + a
        m = self.mlp(self.post_attention_layernorm(h))
        if self.is_gated:
            m = self.gate_ffn.tanh() * m
        return h + m


class VisionEncoder(nn.Module):
    def __init__(self, cfg, num_layers, is_gated):
        super().__init__()
        self.layers = nn.ModuleList([VisionEncoderLayer(cfg, is_gated) for _ in range(num_layers)])

    def forward(self, h, mask):
        """Returns (final state, tuple of the input of every layer plus the final state)."""
        states = []
        for layer in self.layers:
            states.append(h)
            h = layer(h, mask)
        states.append(h)
        return h, states


class PrecomputedAspectRatioEmbedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.max_num_tiles = cfg["max_num_tiles"]
        self.hidden = cfg["hidden_size"]
        num_ids = len(cfg["supported_aspect_ratios"]) + 1
        self.embedding = nn.Embedding(num_ids, self.max_num_tiles * self.hidden)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, h, aspect_ratio_ids):
        emb = self.embedding(aspect_ratio_ids).reshape(-1, self.max_num_tiles, 1, self.hidden)
        return h + emb * self.gate.tanh()


class PrecomputedPositionEmbedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.max_num_tiles = cfg["max_num_tiles"]
        self.hidden = cfg["hidden_size"]
        self.num_patches = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
        num_ids = len(cfg["supported_aspect_ratios"]) + 1
        self.gate = nn.Parameter(torch.zeros(1))
        self.embedding = nn.Parameter(self.hidden ** -0.5 * torch.randn(self.num_patches, self.hidden))
        self.tile_embedding = nn.Embedding(num_ids, self.max_num_tiles * self.num_patches * self.hidden)

    def forward(self, h, aspect_ratio_ids):
        h = h + ((1 - self.gate.tanh()) * self.embedding).view(1, 1, self.num_patches, self.hidden)
        b = h.shape[0]
        tile = self.tile_embedding(aspect_ratio_ids).reshape(b, self.max_num_tiles, self.num_patches, self.hidden)
        return h + self.gate.tanh() * tile


def aspect_ratio_attention_mask(aspect_ratio_mask, num_patches, target_length, dtype):
    """Additive mask over (tile, token) pairs: -inf-like only where both query and key are padding
    (padding tile or 8-alignment token), exactly as HF's _prepare_aspect_ratio_attention_mask."""
    b, tiles = aspect_ratio_mask.shape
    m = aspect_ratio_mask.view(b, tiles, 1, 1).to(dtype).repeat(1, 1, target_length, 1)
    pad = target_length - num_patches
    m[:, :, -pad:] = 0
    m = 1 - m
    m = m.reshape(b, tiles * target_length, 1)
    m = m @ m.transpose(-1, -2) * torch.finfo(dtype).min
    return m.unsqueeze(1)


class MllamaVisionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hidden = cfg["hidden_size"]
        self.hidden = hidden
        self.patch_size = cfg["patch_size"]
        self.max_num_tiles = cfg["max_num_tiles"]
        self.num_patches = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
        self.intermediate_layers_indices = cfg["intermediate_layers_indices"]
        self.patch_embedding = nn.Conv2d(cfg["num_channels"], hidden, kernel_size=self.patch_size,
                                         stride=self.patch_size, padding="valid", bias=False)
        self.class_embedding = nn.Parameter(hidden ** -0.5 * torch.randn(hidden))
        self.gated_positional_embedding = PrecomputedPositionEmbedding(cfg)
        self.pre_tile_positional_embedding = PrecomputedAspectRatioEmbedding(cfg)
        self.post_tile_positional_embedding = PrecomputedAspectRatioEmbedding(cfg)
        self.layernorm_pre = nn.LayerNorm(hidden)
        self.layernorm_post = nn.LayerNorm(hidden)
        self.transformer = VisionEncoder(cfg, cfg["num_hidden_layers"], is_gated=False)
        self.global_transformer = VisionEncoder(cfg, cfg["num_global_layers"], is_gated=True)

    def forward(self, pixel_values, aspect_ratio_ids, aspect_ratio_mask):
        b, m, t, c, hgt, wid = pixel_values.shape
        dim = self.hidden
        x = self.patch_embedding(pixel_values.reshape(b * m * t, c, hgt, wid))
        x = x.flatten(2).transpose(1, 2)
        n = x.shape[1]
        ids = aspect_ratio_ids.reshape(b * m)
        x = self.pre_tile_positional_embedding(x.reshape(b * m, t, n, dim), ids)
        x = x.reshape(b * m * t, n, dim)
        x = torch.cat([self.class_embedding.expand(b * m * t, 1, dim), x], dim=1)
        n += 1
        x = self.gated_positional_embedding(x.reshape(b * m, t, n, dim), ids)
        x = self.layernorm_pre(x)
        pad = (8 - n % 8) % 8
        x = F.pad(x, (0, 0, 0, pad))
        padded = n + pad
        mask = aspect_ratio_attention_mask(aspect_ratio_mask.reshape(b * m, -1), self.num_patches, padded, x.dtype)
        x = x.reshape(b * m, t * padded, dim)
        x, local_states = self.transformer(x, mask)
        x = self.layernorm_post(x)
        x = self.post_tile_positional_embedding(x.reshape(b * m, t, padded, dim), ids)
        x, _ = self.global_transformer(x.reshape(b * m, t * padded, dim), mask)
        x = x.reshape(b * m, t, padded, dim)[:, :, :n].reshape(b, m, t, n, dim)
        # HF stacks the selected local states on a new last axis and flattens it, so the features
        # interleave per channel: [layer_a[d0], layer_b[d0], layer_a[d1], ...].
        inter = torch.stack(local_states, dim=-1)[..., self.intermediate_layers_indices]
        inter = inter.reshape(b * m, t, padded, -1)[:, :, :n].reshape(b, m, t, n, -1)
        return torch.cat([x, inter], dim=-1)


# ---------------------------------------------------------------------------------------------
# Text model


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_inv_freq(cfg):
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        orig = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = orig / low, orig / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (orig / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, groups):
    if groups == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)


class TextMLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TextSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg["num_key_value_heads"]
        self.head_dim = hidden // self.heads
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=False)

    def forward(self, h, mask, cos, sin):
        b, n, _ = h.shape
        q = self.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        g = self.heads // self.kv_heads
        k, v = repeat_kv(k, g), repeat_kv(v, g)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim) + mask
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        return self.o_proj((probs @ v).transpose(1, 2).reshape(b, n, -1))


class TextCrossAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg["num_key_value_heads"]
        self.head_dim = hidden // self.heads
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(self.head_dim, cfg["rms_norm_eps"])
        self.k_norm = RMSNorm(self.head_dim, cfg["rms_norm_eps"])

    def forward(self, h, cross_states, mask):
        b, n, _ = h.shape
        q = self.q_norm(self.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2))
        k = self.k_norm(self.k_proj(cross_states).view(b, -1, self.kv_heads, self.head_dim).transpose(1, 2))
        v = self.v_proj(cross_states).view(b, -1, self.kv_heads, self.head_dim).transpose(1, 2)
        g = self.heads // self.kv_heads
        k, v = repeat_kv(k, g), repeat_kv(v, g)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim) + mask
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        return self.o_proj((probs @ v).transpose(1, 2).reshape(b, n, -1))


class SelfAttentionDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.self_attn = TextSelfAttention(cfg)
        self.mlp = TextMLP(hidden, cfg["intermediate_size"])
        self.input_layernorm = RMSNorm(hidden, cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(hidden, cfg["rms_norm_eps"])

    def forward(self, h, causal_mask, cos, sin, **_):
        h = h + self.self_attn(self.input_layernorm(h), causal_mask, cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class CrossAttentionDecoderLayer(nn.Module):
    def __init__(self, cfg, gate_init):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.cross_attn = TextCrossAttention(cfg)
        self.cross_attn_attn_gate = nn.Parameter(torch.full((1,), gate_init))
        self.cross_attn_mlp_gate = nn.Parameter(torch.full((1,), gate_init))
        self.mlp = TextMLP(hidden, cfg["intermediate_size"])
        self.input_layernorm = RMSNorm(hidden, cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(hidden, cfg["rms_norm_eps"])

    def forward(self, h, causal_mask, cos, sin, cross_states, cross_mask, row_mask):
        h = h + self.cross_attn_attn_gate.tanh() * self.cross_attn(self.input_layernorm(h), cross_states, cross_mask)
        m = self.mlp(self.post_attention_layernorm(h)) * row_mask
        return h + self.cross_attn_mlp_gate.tanh() * m


class MllamaTextModel(nn.Module):
    def __init__(self, cfg, gate_init=0.0):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg["vocab_size"] + 8, cfg["hidden_size"], padding_idx=cfg["pad_token_id"])
        self.cross_layers = set(cfg["cross_attention_layers"])
        self.layers = nn.ModuleList([
            CrossAttentionDecoderLayer(cfg, gate_init) if i in self.cross_layers else SelfAttentionDecoderLayer(cfg)
            for i in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)


class MllamaForCausalLM(nn.Module):
    def __init__(self, cfg, gate_init=0.0):
        super().__init__()
        self.model = MllamaTextModel(cfg, gate_init)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)


def prepare_cross_attention_mask(cross_attention_mask, num_vision_tokens, dtype):
    """(B, S, images, tiles) 0/1 -> additive mask (B, 1, S, images*tiles*tokens) and the row mask
    (B, S, 1); rows that see no tile get no mask at all (HF semantics)."""
    b, s = cross_attention_mask.shape[:2]
    m = cross_attention_mask.repeat_interleave(num_vision_tokens, dim=3).view(b, s, -1).unsqueeze(1)
    inv = (1.0 - m.to(dtype))
    neg = torch.finfo(dtype).min
    m = inv.masked_fill(inv.to(torch.bool), neg)
    row = (m != neg).any(dim=-1).type_as(m)[..., None]
    m = m * row
    return m, row[:, 0]


class MllamaForConditionalGeneration(nn.Module):
    def __init__(self, config, gate_init=0.0):
        super().__init__()
        self.config = config
        tc, vc = config["text_config"], config["vision_config"]
        self.vision_model = MllamaVisionModel(vc)
        self.language_model = MllamaForCausalLM(tc, gate_init)
        self.multi_modal_projector = nn.Linear(vc["vision_output_dim"], tc["hidden_size"], bias=True)

    def cross_states(self, pixel_values, aspect_ratio_ids, aspect_ratio_mask):
        v = self.vision_model(pixel_values, aspect_ratio_ids, aspect_ratio_mask)
        b = v.shape[0]
        return self.multi_modal_projector(v).reshape(b, -1, self.config["text_config"]["hidden_size"])

    def text_forward(self, input_ids, cross, cross_attention_mask, attention_mask=None, position_ids=None,
                     return_hidden=False):
        """Language model over precomputed cross_attention_states (B, vision tokens, hidden)."""
        tm = self.language_model.model
        xmask, row = prepare_cross_attention_mask(cross_attention_mask, self.vision_model.num_patches, cross.dtype)
        b, s = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(s).unsqueeze(0).expand(b, s)
        freqs = position_ids[..., None].float() * tm.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        neg = torch.finfo(cross.dtype).min
        causal = torch.full((s, s), neg).triu(1)[None, None].expand(b, 1, s, s)
        if attention_mask is not None:
            causal = causal.masked_fill(attention_mask[:, None, None, :] == 0, neg)
        h = tm.embed_tokens(input_ids)
        hidden = [h]
        for layer in tm.layers:
            h = layer(h, causal, cos, sin, cross_states=cross, cross_mask=xmask, row_mask=row)
            hidden.append(h)
        logits = self.language_model.lm_head(tm.norm(h))
        if return_hidden:
            return logits, hidden, row
        return logits

    def forward(self, input_ids, pixel_values, aspect_ratio_ids, aspect_ratio_mask, cross_attention_mask,
                attention_mask=None, position_ids=None, return_hidden=False):
        cross = self.cross_states(pixel_values, aspect_ratio_ids, aspect_ratio_mask)
        out = self.text_forward(input_ids, cross, cross_attention_mask, attention_mask, position_ids, return_hidden)
        if return_hidden:
            logits, hidden, row = out
            return logits, hidden, cross, row
        return out
