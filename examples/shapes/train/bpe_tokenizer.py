"""Small byte-level BPE tokenizer in Hugging Face tokenizer.json format, structured like Llama 3.2
Vision's: Llama 3 split regex + ByteLevel, BPE with ignore_merges, special tokens after the learned
vocabulary and <|image|> = vocab_size. The encoder reproduces HF tokenizers on ASCII text (the only
text this demo encodes); non-ASCII input is rejected rather than mis-tokenised."""
import json
import re
from collections import Counter

from shapes_world import COLOUR_NAMES, SHAPES

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# The same pattern restricted to ASCII, where \p{L} = [A-Za-z] and \p{N} = [0-9].
_ASCII_PATTERN = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]{1,3}| ?[^\sA-Za-z0-9]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+", re.ASCII)

SPECIAL_NAMES = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
IMAGE_TOKEN = "<|image|>"
PROMPT = "Describe the image."

CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}"
    "{%- for content in message['content'] %}{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table used by ByteLevel."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pre_tokenize(text):
    if not text.isascii():
        raise ValueError("this demo tokenizer encodes ASCII text only")
    return ["".join(BYTE_TO_CHAR[b] for b in piece.encode()) for piece in _ASCII_PATTERN.findall(text)]


def training_texts():
    """Every text the model reads or writes: chat scaffolding, prompts, captions, answers."""
    texts = ["user", "assistant", "system", "\n\n", PROMPT]
    for shape in SHAPES:
        texts.append(f"What colour is the {shape}?")
    for c in COLOUR_NAMES:
        texts.append(f"{c}.")
    for s1 in SHAPES:
        for c1 in COLOUR_NAMES:
            texts.append(f"a {c1} {s1}.")
            for rel in ("left of", "right of", "above", "below"):
                for s2 in SHAPES:
                    for c2 in COLOUR_NAMES:
                        texts.append(f"a {c1} {s1} {rel} a {c2} {s2}.")
    return texts


def learn_merges(texts):
    """Classic BPE training: merge the most frequent adjacent pair (ties: smallest pair) until
    every pre-token of the corpus is one token."""
    words = Counter(p for t in texts for p in pre_tokenize(t))
    seqs = {w: list(w) for w in words}
    merges = []
    while True:
        pairs = Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w in words:
            s = seqs[w]
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out


class Tokenizer:
    def __init__(self, vocab, merges, specials, image_id):
        self.vocab = vocab                      # token string -> id (non-special)
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.specials = specials                # name -> id, <|image|> included
        self.id_to_token = {i: t for t, i in vocab.items()}
        self.id_to_token.update({i: t for t, i in specials.items()})
        self.vocab_size = image_id
        self.image_id = image_id
        self._special_re = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))

    @classmethod
    def train(cls):
        merges = learn_merges(training_texts())
        vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
        for a, b in merges:
            vocab[a + b] = len(vocab)
        base = len(vocab)
        vocab_size = (base + len(SPECIAL_NAMES) + 7) // 8 * 8
        names = SPECIAL_NAMES + [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + vocab_size - base - len(SPECIAL_NAMES))]
        specials = {n: base + i for i, n in enumerate(names)}
        specials[IMAGE_TOKEN] = vocab_size
        return cls(vocab, [list(m) for m in merges], specials, vocab_size)

    @classmethod
    def load(cls, path):
        t = json.load(open(path))
        merges = [m.split(" ") if isinstance(m, str) else m for m in t["model"]["merges"]]
        specials = {a["content"]: a["id"] for a in t["added_tokens"]}
        return cls(t["model"]["vocab"], merges, specials, specials[IMAGE_TOKEN])

    def id(self, name):
        return self.specials[name]

    def _bpe(self, piece):
        if piece in self.vocab:  # ignore_merges
            return [self.vocab[piece]]
        parts = list(piece)
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            ranked = [r for r in ranked if r[0] is not None]
            if not ranked:
                break
            _, i = min(ranked)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        """Encodes text with special tokens split out first (no BOS added)."""
        ids, pos = [], 0
        for m in self._special_re.finditer(text):
            ids += [i for p in pre_tokenize(text[pos:m.start()]) for i in self._bpe(p)]
            ids.append(self.specials[m.group()])
            pos = m.end()
        ids += [i for p in pre_tokenize(text[pos:]) for i in self._bpe(p)]
        return ids

    def decode(self, ids, skip_special=True):
        special_ids = set(self.specials.values())
        chars = "".join(self.id_to_token[i] for i in ids if not (skip_special and i in special_ids))
        if skip_special:
            return bytes(CHAR_TO_BYTE[c] for c in chars).decode("utf-8", errors="replace")
        return chars

    def chat_prompt(self, question=PROMPT):
        return self.encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>" + question +
                           "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")

    def to_json(self):
        merges = sorted(self.ranks, key=self.ranks.get)
        added = [{"id": i, "content": n, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for n, i in sorted(self.specials.items(), key=lambda kv: kv[1])]
        bos = "<|begin_of_text|>"
        return {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": {"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                {"type": "TemplateProcessing",
                 "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                 "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                          {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                 "special_tokens": {bos: {"id": bos, "ids": [self.specials[bos]], "tokens": [bos]}}}]},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                      "vocab": self.vocab, "merges": [f"{a} {b}" for a, b in merges]},
        }

    def config_json(self):
        decoder = {str(i): {"content": n, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True}
                   for n, i in sorted(self.specials.items(), key=lambda kv: kv[1])}
        return {"added_tokens_decoder": decoder, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                "pad_token": "<|finetune_right_pad_id|>", "chat_template": CHAT_TEMPLATE,
                "clean_up_tokenization_spaces": True, "model_input_names": ["input_ids", "attention_mask"],
                "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast"}


if __name__ == "__main__":
    tok = Tokenizer.train()
    print("vocab_size", tok.vocab_size, "merges", len(tok.ranks))
    ids = tok.chat_prompt()
    print("prompt", ids, [tok.id_to_token[i] for i in ids])
    cap = tok.encode("a red circle left of a blue square.<|eot_id|>")
    print("caption", cap, [tok.id_to_token[i] for i in cap], repr(tok.decode(cap)))
