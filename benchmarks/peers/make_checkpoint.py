#!/usr/bin/python3
"""Writes a Hugging Face-style checkpoint folder with random bf16 weights for the speed comparison.

    make_checkpoint.py OUT_DIR {llama|llava} [--seed S] [--tiny]

llama: LlamaForCausalLM with Meta's Llama-3.2-1B config.json (hidden 2048, 16 layers, 32/8 heads, head_dim 64,
       ffn 8192, vocab 128256, llama3 RoPE scaling, tied embeddings), one model.safetensors, the Llama 3
       tokenizer and chat template copied from tests/data/tokenizers/llama3/.
llava: LlavaForConditionalGeneration as llava-1.5 ships it (CLIP ViT-L/14 at 336 px, feature layer -2, CLS
       dropped, gelu projector, 576 image tokens) around the same 1B Llama text model, with the tensor names
       transformers 4.45 writes, preprocessor_config.json (CLIPImageProcessor, 336 px) and the Llama 3
       tokenizer with its last reserved special token (id 128255) renamed <image>, so the text model keeps
       the 1B shape (vocab 128256).
--tiny: the same structure at test size (hidden 64, 2 layers, 8/2 heads, head_dim 8, ffn 256; vision hidden
       64, 2 layers, still 336 px / 576 image tokens; vocab 128256 kept so the real tokenizer works), for
       checking that torch_peer.py and fusionlm compute the same function.

Weights are normal with std 0.02 (biases too), norm weights 1 and norm biases 0, rounded to bf16 (--tiny:
see random_tensor). Debian has no
safetensors module, so the file is written by hand: 8-byte little-endian header length, a JSON header with
dtype / shape / data_offsets per tensor and __metadata__ {"format": "pt"}, padded with spaces to a multiple
of 8 bytes, then the raw little-endian data. Run with Debian's /usr/bin/python3 (torch, numpy).
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER_DIR = os.path.join(REPO, "tests", "data", "tokenizers", "llama3")
IMAGE_TOKEN_ID = 128255  # <|reserved_special_token_250|> in the Llama 3 tokenizer, renamed <image> for llava


def llama_config(tiny):
    """Meta's Llama-3.2-1B config.json (the base model: eos 128001)."""
    c = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "head_dim": 64,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 8192,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_hidden_layers": 16,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0.dev0",
        "use_cache": True,
        "vocab_size": 128256,
    }
    if tiny:
        c.update(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=8)
    return c


def clip_vision_config(tiny):
    """llava-1.5's tower: CLIP ViT-L/14 at 336 px (openai/clip-vit-large-patch14-336)."""
    c = {
        "hidden_act": "quick_gelu",
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    }
    if tiny:
        c.update(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2)
    return c


def llava_config(tiny):
    text = llama_config(tiny)
    for key in ("architectures", "transformers_version", "use_cache", "torch_dtype"):
        del text[key]
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_seq_length": 576,
        "image_token_index": IMAGE_TOKEN_ID,
        "model_type": "llava",
        "projector_hidden_act": "gelu",
        "text_config": text,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.2",
        "vision_config": clip_vision_config(tiny),
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }


def llama_tensors(t, prefix=""):
    """(name, shape, kind) of a tied LlamaForCausalLM; kind is "w" (random) or "norm" (ones)."""
    H, I, L = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    D = t["head_dim"]
    q, kv = t["num_attention_heads"] * D, t["num_key_value_heads"] * D
    m = prefix + "model."
    out = [(m + "embed_tokens.weight", (t["vocab_size"], H), "w")]
    for i in range(L):
        p = m + "layers.%d." % i
        out += [(p + "input_layernorm.weight", (H,), "norm"),
                (p + "self_attn.q_proj.weight", (q, H), "w"),
                (p + "self_attn.k_proj.weight", (kv, H), "w"),
                (p + "self_attn.v_proj.weight", (kv, H), "w"),
                (p + "self_attn.o_proj.weight", (H, q), "w"),
                (p + "post_attention_layernorm.weight", (H,), "norm"),
                (p + "mlp.gate_proj.weight", (I, H), "w"),
                (p + "mlp.up_proj.weight", (I, H), "w"),
                (p + "mlp.down_proj.weight", (H, I), "w")]
    out.append((m + "norm.weight", (H,), "norm"))
    if not t["tie_word_embeddings"]:
        out.append((prefix + "lm_head.weight", (t["vocab_size"], H), "w"))
    return out


def llava_tensors(c):
    v, t = c["vision_config"], c["text_config"]
    E, I, P, C = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["num_channels"]
    tokens = (v["image_size"] // P) ** 2 + 1
    p = "vision_tower.vision_model."
    out = [(p + "embeddings.class_embedding", (E,), "w"),
           (p + "embeddings.patch_embedding.weight", (E, C, P, P), "w"),
           (p + "embeddings.position_embedding.weight", (tokens, E), "w"),
           (p + "pre_layrnorm.weight", (E,), "norm"), (p + "pre_layrnorm.bias", (E,), "zero")]
    for i in range(v["num_hidden_layers"]):
        q = p + "encoder.layers.%d." % i
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out += [(q + "self_attn.%s.weight" % n, (E, E), "w"), (q + "self_attn.%s.bias" % n, (E,), "w")]
        out += [(q + "layer_norm1.weight", (E,), "norm"), (q + "layer_norm1.bias", (E,), "zero"),
                (q + "mlp.fc1.weight", (I, E), "w"), (q + "mlp.fc1.bias", (I,), "w"),
                (q + "mlp.fc2.weight", (E, I), "w"), (q + "mlp.fc2.bias", (E,), "w"),
                (q + "layer_norm2.weight", (E,), "norm"), (q + "layer_norm2.bias", (E,), "zero")]
    out += [(p + "post_layernorm.weight", (E,), "norm"), (p + "post_layernorm.bias", (E,), "zero")]
    H = t["hidden_size"]
    out += [("multi_modal_projector.linear_1.weight", (H, E), "w"), ("multi_modal_projector.linear_1.bias", (H,), "w"),
            ("multi_modal_projector.linear_2.weight", (H, H), "w"), ("multi_modal_projector.linear_2.bias", (H,), "w")]
    return out + llama_tensors(t, "language_model.")


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def random_tensor(shape, kind, tiny, gen):
    """The benchmark's weights: normal std 0.02, norm weights 1, norm biases 0. Tiny checkpoints are a
    correctness check, so their weights must make every part of the function matter: matrices std
    1/sqrt(fan_in) (each layer's output then outweighs the input embedding and greedy tokens follow the
    context instead of repeating one token), vectors std 0.1, norm weights 1 + N(0, 0.1). In the tiny
    llava the 576 projected image features then outweigh the text, so its greedy tokens depend mostly on
    the image: that checks the tower, the projector and the splice; the tiny llama checks the text path."""
    if not tiny:
        if kind == "norm":
            return torch.ones(shape)
        if kind == "zero":
            return torch.zeros(shape)
        return torch.randn(shape, generator=gen) * 0.02
    x = torch.randn(shape, generator=gen)
    if kind == "norm":
        return 1.0 + 0.1 * x
    if len(shape) == 1:
        return 0.1 * x
    return x / math.sqrt(numel(shape[1:]))


def write_safetensors(path, tensors, seed, tiny):
    """Streams the tensors (name, shape, kind) as bf16 into one safetensors file, in the given order."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        nbytes = 2 * numel(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    gen = torch.Generator().manual_seed(seed)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shape, kind in tensors:
            x = random_tensor(shape, kind, tiny, gen)
            # bf16 bits, little-endian as on x86 (torch has no bf16 -> numpy; int16 has the same bytes)
            f.write(x.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    os.replace(tmp, path)
    return off


def write_json(path, obj):
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def write_tokenizer(out, kind):
    if kind == "llama":
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            src = os.path.join(TOKENIZER_DIR, name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(out, name))
        return
    # llava: the same tokenizer with <image> in place of the last reserved special token, and the llava-1.5
    # chat template ("USER: <image>\n... ASSISTANT:"); BOS stays <|begin_of_text|>.
    with open(os.path.join(TOKENIZER_DIR, "tokenizer.json")) as f:
        tok = json.load(f)
    hits = [a for a in tok["added_tokens"] if a["id"] == IMAGE_TOKEN_ID]
    if len(hits) != 1:
        raise SystemExit("tokenizer.json has no added token %d to rename <image>" % IMAGE_TOKEN_ID)
    hits[0]["content"] = "<image>"
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(TOKENIZER_DIR, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    cfg["added_tokens_decoder"][str(IMAGE_TOKEN_ID)]["content"] = "<image>"
    cfg["chat_template"] = LLAVA_CHAT_TEMPLATE
    cfg["processor_class"] = "LlavaProcessor"
    write_json(os.path.join(out, "tokenizer_config.json"), cfg)


def make(out, kind, seed, tiny):
    os.makedirs(out, exist_ok=True)
    if kind == "llama":
        config = llama_config(tiny)
        tensors = llama_tensors(config)
    else:
        config = llava_config(tiny)
        tensors = llava_tensors(config)
        write_json(os.path.join(out, "preprocessor_config.json"), {
            "crop_size": {"height": 336, "width": 336},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "processor_class": "LlavaProcessor",
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": 336},
        })
    write_tokenizer(out, kind)
    text = config if kind == "llama" else config["text_config"]
    write_json(os.path.join(out, "generation_config.json"), {
        "_from_model_config": True, "bos_token_id": text["bos_token_id"], "eos_token_id": text["eos_token_id"],
        "transformers_version": "4.45.2"})
    write_json(os.path.join(out, "config.json"), config)
    # model.safetensors last: its presence marks a complete folder (run.py checks for it)
    nbytes = write_safetensors(os.path.join(out, "model.safetensors"), tensors, seed, tiny)
    print("%s: %s%s, %d tensors, %.3f GB of bf16 weights" % (out, kind, " (tiny)" if tiny else "", len(tensors),
                                                             nbytes / 1e9))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("kind", choices=["llama", "llava"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="test-size model of the same structure")
    a = ap.parse_args(argv)
    make(a.out_dir, a.kind, a.seed, a.tiny)


if __name__ == "__main__":
    main(sys.argv[1:])
