"""Configuration of the demo checkpoint and the batch builder shared by training, export and eval."""
import copy

import numpy as np
import torch

from bpe_tokenizer import PROMPT, Tokenizer
from preprocess import MllamaImageProcessor, supported_aspect_ratios

TILE = 84
MAX_TILES = 2
MAX_NEW_TOKENS = 24

PREPROCESSOR_CONFIG = {
    "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "MllamaImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "max_image_tiles": MAX_TILES, "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": TILE, "width": TILE},
}

# Every field transformers 4.45 writes for PretrainedConfig subclasses, so the file reads like a
# downloaded checkpoint's.
_PRETRAINED_FIELDS = {
    "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
    "begin_suppress_tokens": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
    "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0, "exponential_decay_length_penalty": None, "finetuning_task": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "is_decoder": False, "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "length_penalty": 1.0, "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0, "num_beam_groups": 1,
    "num_beams": 1, "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "prefix": None, "problem_type": None, "pruned_heads": {},
    "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
    "return_dict_in_generate": False, "sep_token_id": None, "suppress_tokens": None,
    "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False, "tie_encoder_decoder": False,
    "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False,
    "typical_p": 1.0, "use_bfloat16": False,
}


def make_config(tok):
    bos, pad = tok.id("<|begin_of_text|>"), tok.id("<|finetune_right_pad_id|>")
    eos = tok.id("<|end_of_text|>")
    text = copy.deepcopy(_PRETRAINED_FIELDS)
    text.update({
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "cross_attention_layers": [1, 3],
        "dropout": 0, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 192, "max_position_embeddings": 1024, "model_type": "mllama_text_model",
        "num_attention_heads": 4, "num_hidden_layers": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "use_cache": True, "vocab_size": tok.vocab_size,
    })
    vision = copy.deepcopy(_PRETRAINED_FIELDS)
    vision.update({
        "attention_heads": 4, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "hidden_act": "gelu", "hidden_size": 64, "image_size": TILE, "initializer_range": 0.02,
        "intermediate_layers_indices": [1], "intermediate_size": 128, "max_num_tiles": MAX_TILES,
        "model_type": "mllama_vision_model", "norm_eps": 1e-05, "num_channels": 3, "num_global_layers": 1,
        "num_hidden_layers": 2, "patch_size": 14,
        "supported_aspect_ratios": [list(r) for r in supported_aspect_ratios(MAX_TILES)],
        "tie_word_embeddings": True, "vision_output_dim": 128,
    })
    return {"architectures": ["MllamaForConditionalGeneration"], "image_token_index": tok.image_id,
            "model_type": "mllama", "text_config": text, "torch_dtype": "float32",
            "transformers_version": "4.45.2", "vision_config": vision}


def generation_config(tok):
    return {"_from_model_config": False, "bos_token_id": tok.id("<|begin_of_text|>"),
            "eos_token_id": [tok.id("<|eot_id|>"), tok.id("<|end_of_text|>")],
            "pad_token_id": tok.id("<|finetune_right_pad_id|>"), "transformers_version": "4.45.2"}


class BatchBuilder:
    """Turns (image, caption) pairs into model inputs with the chat prompt and answer-only labels."""

    def __init__(self, tok, preprocessor_config=PREPROCESSOR_CONFIG):
        self.tok = tok
        self.proc = MllamaImageProcessor(preprocessor_config)
        self.max_tiles = preprocessor_config["max_image_tiles"]
        self.prompt = tok.chat_prompt(PROMPT)
        self.image_pos = self.prompt.index(tok.image_id)
        self.eot = tok.id("<|eot_id|>")
        self.pad = tok.id("<|finetune_right_pad_id|>")

    def images(self, imgs):
        out = [self.proc(im) for im in imgs]
        pv = torch.from_numpy(np.stack([o[0] for o in out]))[:, None]
        ar_ids = torch.tensor([[o[1]] for o in out])
        ar_mask = torch.from_numpy(np.stack([o[2] for o in out]))[:, None]
        num_tiles = [o[3] for o in out]
        return pv, ar_ids, ar_mask, num_tiles

    def cross_mask(self, num_tiles, seq_len):
        """MllamaProcessor's mask for one image per prompt: the <|image|> token and every later
        token see the image's real tiles."""
        m = torch.zeros(len(num_tiles), seq_len, 1, self.max_tiles, dtype=torch.long)
        for i, n in enumerate(num_tiles):
            m[i, self.image_pos:, 0, :n] = 1
        return m

    def train_batch(self, imgs, captions):
        pv, ar_ids, ar_mask, num_tiles = self.images(imgs)
        answers = [self.tok.encode(c) + [self.eot] for c in captions]
        seq = len(self.prompt) + max(len(a) for a in answers)
        ids = torch.full((len(imgs), seq), self.pad, dtype=torch.long)
        labels = torch.full((len(imgs), seq), -100, dtype=torch.long)
        for i, a in enumerate(answers):
            full = self.prompt + a
            ids[i, :len(full)] = torch.tensor(full)
            # label at position p is the token at p + 1 (answer tokens only)
            labels[i, len(self.prompt) - 1:len(full) - 1] = torch.tensor(a)
        return ids, labels, pv, ar_ids, ar_mask, self.cross_mask(num_tiles, seq)

    @torch.no_grad()
    def greedy(self, model, imgs, max_new_tokens=MAX_NEW_TOKENS, margins=None):
        """Greedy decoding (batched, no KV cache) until <|eot_id|>; returns generated id lists
        without the stop token. If margins is a list, appends per picture the smallest gap between
        the top two logits over its decoding steps."""
        pv, ar_ids, ar_mask, num_tiles = self.images(imgs)
        cross = model.cross_states(pv, ar_ids, ar_mask)
        ids = torch.tensor([self.prompt] * len(imgs))
        done = torch.zeros(len(imgs), dtype=torch.bool)
        out = [[] for _ in imgs]
        gaps = [float("inf")] * len(imgs)
        for _ in range(max_new_tokens):
            logits = model.text_forward(ids, cross, self.cross_mask(num_tiles, ids.shape[1]))[:, -1]
            nxt = logits.argmax(-1)
            top2 = logits.topk(2, dim=-1).values
            for i in range(len(imgs)):
                if not done[i]:
                    gaps[i] = min(gaps[i], float(top2[i, 0] - top2[i, 1]))
                    if nxt[i].item() == self.eot:
                        done[i] = True
                    else:
                        out[i].append(nxt[i].item())
            if done.all():
                break
            ids = torch.cat([ids, nxt[:, None]], dim=1)
        if margins is not None:
            margins.extend(gaps)
        return out


def load_tokenizer(path=None):
    return Tokenizer.load(path) if path else Tokenizer.train()


def load_checkpoint(model_dir):
    """Loads an exported checkpoint folder exactly as a user of the files would: config.json,
    model.safetensors, tokenizer.json, preprocessor_config.json."""
    import json
    import os

    import safetensors_io
    from mllama import MllamaForConditionalGeneration

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    model = MllamaForConditionalGeneration(cfg)
    weights = {k: torch.from_numpy(v) for k, v in safetensors_io.read(os.path.join(model_dir, "model.safetensors")).items()}
    model.load_state_dict(weights, strict=True)
    model.eval()
    tok = Tokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    pre = json.load(open(os.path.join(model_dir, "preprocessor_config.json")))
    return model, tok, BatchBuilder(tok, pre)
