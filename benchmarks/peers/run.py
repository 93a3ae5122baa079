#!/usr/bin/python3
"""fusionlm-run against the PyTorch peer (torch_peer.py), back to back, on the same checkpoints and threads.

    /usr/bin/python3 benchmarks/peers/run.py [-t 2] [-r 3] [--peer bf16,f32,f32-gemv] [--work build/peers]
                                             [--fusionlm-run PATH] [--cases llama128,llama512,llava]
    /usr/bin/python3 benchmarks/peers/run.py --check      (the peer against the reference cases and, on tiny
                                                           checkpoints, against fusionlm-run's greedy tokens)

1. Makes the checkpoints in the work folder if missing (make_checkpoint.py: llama = Llama-3.2-1B shape,
   llava = CLIP ViT-L/14 336 px + the same decoder; random bf16 weights, ~2.5 and ~3.1 GB).
2. Builds prompt texts whose chat prompts are exactly 128 and 512 tokens (counted with fusionlm-tokenize
   and checked against fusionlm-run's prompt_tokens), and a short llava prompt with one image
   (576 image tokens + the text).
3. Per case and repetition: `fusionlm-run -m DIR -p TEXT -n 32 --ignore-eos --temp 0 -t T --json` and
   `torch_peer.py -m DIR --prompt-tokens N -n 32 -t T --dtype D [--gemv]` for each peer variant (D, and
   "-gemv" for one-row linears through torch.mv), the order alternating between repetitions.
4. Prints the machine, then per phase the fusionlm and torch medians with their min-max range and the ratio
   (fusionlm speed / torch speed: above 1 means fusionlm is faster), and decode weight-bytes x tokens/s.
Raw results go to WORK/results-<time>.json. fusionlm-run is found by --fusionlm-run, else $FUSIONLM_RUN,
else build/examples/fusionlm-run under the repo; fusionlm-tokenize next to it.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PYTHON = sys.executable or "/usr/bin/python3"
IMAGE_TOKEN = "<image>"

# Prose for the prompts (written for this benchmark); the 128- and 512-token prompts are prefixes of it.
PROSE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a can of oil and a cloth "
    "for the great lens. From the gallery at the top he could see the whole bay: the fishing boats coming home "
    "in a ragged line, the gulls settling on the breakwater, and far out, where the water turned from green to "
    "slate, the grey hulls of the cargo ships waiting for the tide. He had kept the light for thirty-one years, "
    "and in all that time it had failed only twice, once in the great storm of the winter his daughter was "
    "born, and once when a careless supply boat delivered the wrong grade of paraffin. Both nights were "
    "written in the logbook in his small, careful hand, with the hour the flame went out, the hour it was "
    "relit, and the names of the ships that passed in the dark between. The logbooks filled a shelf in the "
    "kitchen, bound in cloth that had faded from blue to the colour of sea glass. Visitors sometimes asked to "
    "read them, expecting adventure, and were surprised to find mostly weather: wind from the south-west, "
    "force five, backing south; visibility moderate; a swell from the west. But the keeper read them the way "
    "other people read novels. He could open any page and remember the smell of that morning, the sound of "
    "the bell buoy, the particular grey of the clouds. When the engineers came to install the automatic lamp, "
    "they were polite and brisk. They measured the gallery, tested the current from the new cable, and fitted "
    "a small metal box that would switch the light on when a sensor decided the day was over. The box did not "
    "need oil, or a cloth, or anyone to climb the stairs. They told him he could stay in the cottage as long "
    "as he liked, and that the logbooks would go to the maritime museum in the city, where they would be "
    "scanned and kept in a room with controlled humidity. On the last night before the changeover he climbed "
    "the stairs as usual. The oil can was nearly empty, so he filled it from the drum in the shed, and he "
    "polished the brass until it shone in the last of the daylight. Then he lit the flame, wrote the time in "
    "the book, and sat on the iron bench to watch the beam sweep across the water. A trawler answered with "
    "two short blasts of its horn, as the old skippers used to do, and he raised his hand although no one "
    "could see it. In the morning the engineers switched on the box, and the light came on that evening "
    "without him. He found that he still woke at dusk, and that his feet still knew the number of the steps. "
    "So he kept walking up, not to tend the lamp, but to write the weather in a new notebook of his own: the "
    "wind, the swell, the boats, and the colour of the sky above the harbour. Years later, when the museum "
    "put the old logbooks on display, a girl from the village copied one of his entries onto a card and "
    "pinned it above her desk at the weather service, where she forecast storms for ships she never saw. It "
    "said only: calm at dusk, light burning well, all boats home."
)
LLAVA_TEXT = "Describe this image in detail, including the objects, their colours and the setting."


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------
def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run_json(cmd, what):
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit("%s failed (exit %d): %s\n%s" % (what, p.returncode, " ".join(cmd[:4]) + " ...",
                                                         p.stderr.strip()[-2000:]))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit("%s printed no JSON line:\n%s" % (what, p.stdout[-2000:]))
    out = json.loads(lines[-1])
    out["wall_s"] = wall
    return out


class Tokenizer:
    """Counts and produces prompt ids through fusionlm-tokenize (the library's own tokenizer), rendering the
    chat templates fusionlm-run uses (include/fusionlm/text/chat.hpp); decodes ids by the byte-level table."""

    def __init__(self, exe, model_dir):
        self.exe, self.path = exe, os.path.join(model_dir, "tokenizer.json")
        with open(self.path) as f:
            tok = json.load(f)
        self.bos = 128000
        self.pieces = {i: s for s, i in tok["model"]["vocab"].items()}
        self.special = {a["id"] for a in tok["added_tokens"] if a.get("special")}
        for a in tok["added_tokens"]:
            self.pieces[a["id"]] = a["content"]
        # GPT-2 byte-to-unicode table, inverted
        bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_of = {chr(c): b for b, c in zip(bs, cs)}

    def encode_many(self, texts):
        lines = "".join(json.dumps({"text": t}) + "\n" for t in texts)
        p = subprocess.run([self.exe, self.path], input=lines, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        if p.returncode != 0:
            raise SystemExit("fusionlm-tokenize failed: " + p.stderr.strip())
        return [json.loads(ln)["ids"] for ln in p.stdout.splitlines()]

    @staticmethod
    def render(kind, text):
        if kind == "llama":  # Llama 3 chat template, text trimmed (BOS is prepended as an id)
            return ("<|start_header_id|>user<|end_header_id|>\n\n" + text.strip() +
                    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        return "USER: " + IMAGE_TOKEN + "\n" + text + " ASSISTANT:"  # llava-1.5, one image

    def prompt_ids(self, kind, texts):
        return [[self.bos] + ids for ids in self.encode_many([self.render(kind, t) for t in texts])]

    def decode(self, ids):
        raw = bytearray()
        for i in ids:
            if i in self.special:
                continue
            raw += bytes(self.byte_of[ch] for ch in self.pieces[i])
        return raw.decode("utf-8", errors="replace")


def prose_prefix(tokenizer, target):
    """A prefix of PROSE whose llama chat prompt has exactly `target` tokens if one exists (whole words,
    else cut inside the next word), else the longest with fewer."""
    words = PROSE.split(" ")
    candidates = [" ".join(words[:k]) for k in range(1, len(words) + 1)]
    counts = [len(ids) for ids in tokenizer.prompt_ids("llama", candidates)]
    best = max((k for k, c in enumerate(counts) if c <= target), default=None)
    if best is None:
        raise SystemExit("no prefix of the prose fits %d tokens" % target)
    if counts[best] < target and best + 1 < len(words):
        nxt = words[best + 1]
        cuts = [candidates[best] + " " + nxt[:j] for j in range(1, len(nxt))]
        for text, ids in zip(cuts, tokenizer.prompt_ids("llama", cuts)):
            if len(ids) == target:
                return text, target
    return candidates[best], counts[best]


def weight_bytes(model_dir, prefix=""):
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
               if k != "__metadata__" and k.startswith(prefix))


def ensure_checkpoint(work, kind, tiny):
    d = os.path.join(work, kind + ("-tiny" if tiny else ""))
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        log("making %s ..." % d)
        cmd = [PYTHON, os.path.join(HERE, "make_checkpoint.py"), d, kind] + (["--tiny"] if tiny else [])
        subprocess.run(cmd, check=True)
    return d


def machine_info():
    info = {"python": platform.python_version(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)")}
    try:
        lscpu = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        for ln in lscpu.splitlines():
            key, _, val = ln.partition(":")
            if key.strip() == "Model name":
                info["cpu"] = val.strip()
            elif key.strip() == "Flags":
                flags = set(val.split())
                info["flags"] = " ".join("%s%s" % ("" if f in flags else "no ", f)
                                         for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16"))
                # torch 1.13 sends bf16 matmul to oneDNN only where avx512bw/vl/dq exist; elsewhere it runs
                # ATen's generic single-threaded gemm, about 1.5 GFLOP/s on a Zen 3 core
                fast = all(f in flags for f in ("avx512bw", "avx512vl", "avx512dq"))
                info["torch_bf16_matmul"] = "oneDNN" if fast else "ATen fallback (no avx512bw/vl/dq)"
            elif key.strip() in ("CPU(s)", "L3 cache"):
                info[key.strip()] = val.strip()
    except OSError:
        pass
    info["loadavg"] = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    probe = subprocess.run([PYTHON, "-c", "import torch; print(torch.__version__); print(torch.__config__.show())"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info["torch"] = probe.stdout.splitlines()[0] if probe.stdout else "unavailable: " + probe.stderr.strip()[-200:]
    info["torch_config"] = "\n".join(probe.stdout.splitlines()[1:])
    return info


def find_tools(a):
    exe = a.fusionlm_run or os.environ.get("FUSIONLM_RUN") or os.path.join(REPO, "build", "examples", "fusionlm-run")
    if not os.access(exe, os.X_OK):
        raise SystemExit("fusionlm-run not found at %s (use --fusionlm-run or $FUSIONLM_RUN)" % exe)
    tok = a.fusionlm_tokenize or os.path.join(os.path.dirname(exe), "fusionlm-tokenize")
    if not os.access(tok, os.X_OK):
        raise SystemExit("fusionlm-tokenize not found at %s (build examples/tokenize.cpp or use "
                         "--fusionlm-tokenize)" % tok)
    return exe, tok


def fusionlm_cmd(exe, model, text, n, threads, image=None, f32=False):
    cmd = [exe, "-m", model, "-p", text, "-n", str(n), "--ignore-eos", "--temp", "0", "-t", str(threads), "--json"]
    return cmd + (["--image", image] if image else []) + (["--f32"] if f32 else [])


def peer_cmd(model, n, threads, variant, prompt_tokens=None, prompt_ids=None, image=None):
    dtype, _, gemv = variant.partition("-")
    cmd = [PYTHON, os.path.join(HERE, "torch_peer.py"), "-m", model, "-n", str(n), "-t", str(threads),
           "--dtype", dtype] + (["--gemv"] if gemv else [])
    cmd += ["--prompt-tokens", str(prompt_tokens)] if prompt_ids is None else \
        ["--prompt-ids", ",".join(str(i) for i in prompt_ids)]
    return cmd + (["--image", image] if image else [])


# ------------------------------------------------------------------------------------------------------------
# --check: the peer and fusionlm compute the same function
# ------------------------------------------------------------------------------------------------------------
CHECK_PROMPTS = [
    "What is the capital of France?",
    "Count from one to ten: one, two, three,",
    PROSE[:400],
]


def check(a, exe, tok_exe):
    """The peer against the repo's LLaVA reference cases (check_reference.py), then against fusionlm-run on
    tiny checkpoints of the benchmark's structure."""
    ref = subprocess.run([PYTHON, os.path.join(HERE, "check_reference.py")], stdout=subprocess.PIPE, text=True)
    print(ref.stdout)
    work, n, ok = a.work, 8, ref.returncode == 0
    rows = []
    for kind in ("llama", "llava"):
        model = ensure_checkpoint(work, kind, tiny=True)
        tok = Tokenizer(tok_exe, model)
        prompts = CHECK_PROMPTS if kind == "llama" else CHECK_PROMPTS[:2]
        images = [None] if kind == "llama" else [a.image] + [os.path.join(REPO, "tests", "data", "images", f) for f in
                                                            ("rocket.jpg", "chelsea.png", "astronaut_progressive.jpg")]
        for image in images:
            for text, ids in zip(prompts, tok.prompt_ids(kind, prompts)):
                # f32 compute, as the f32 peers: bf16 dot products (the default where the CPU has them) round
                # activations and may pick a different token at a near tie.
                ours = run_json(fusionlm_cmd(exe, model, text, n, a.threads, image, f32=True), "fusionlm-run")
                for variant in ("f32", "f32-gemv", "bf16"):
                    peer = run_json(peer_cmd(model, n, a.threads, variant, prompt_ids=ids, image=image), "torch_peer")
                    same_len = ours["prompt_tokens"] == peer["prompt_tokens"]
                    same = ours["tokens"] == peer["tokens"]
                    if variant.startswith("f32"):
                        ok &= same and same_len
                    rows.append((kind, os.path.basename(image) if image else "-", text[:32], variant,
                                 "%d/%d" % (ours["prompt_tokens"], peer["prompt_tokens"]),
                                 "agree" if same else "DIFFER", peer["tokens"], ours["text"],
                                 tok.decode(peer["tokens"])))
    print("| model | image | prompt | peer | prompt tokens fusionlm/peer | greedy %d tokens | peer ids |" % n)
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| %s | %s | %s | %s | %s | %s | %s |" % (r[0], r[1], json.dumps(r[2]), r[3], r[4], r[5], r[6]))
        if r[5] != "agree":
            print("    fusionlm: %s\n    peer:     %s" % (json.dumps(r[7]), json.dumps(r[8])))
    for kind in ("llama", "llava"):
        seqs = [tuple(r[6]) for r in rows if r[0] == kind and r[3] == "f32"]
        print("%s: %d distinct greedy sequences over %d runs" % (kind, len(set(seqs)), len(seqs)))
    print("check %s (reference cases within tolerance; the f32 peers agree with fusionlm-run on every prompt; "
          "bf16 is informative)" % ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------------------
# the measurement
# ------------------------------------------------------------------------------------------------------------
def spread(values):
    med = statistics.median(values)
    if len(values) == 1:
        return med, ""
    return med, "%.3g-%.3g" % (min(values), max(values))


def measure(a, exe, tok_exe):
    info = machine_info()
    print("machine: %s, %s CPUs, L3 %s; %s" % (info.get("cpu", "?"), info.get("CPU(s)", "?"),
                                               info.get("L3 cache", "?"), info.get("flags", "?")))
    print("torch %s (%s), python %s, bf16 matmul: %s, OPENBLAS_CORETYPE=%s, load average %s" % (
        info["torch"], PYTHON, info["python"], info.get("torch_bf16_matmul", "?"), info["OPENBLAS_CORETYPE"],
        " ".join(info["loadavg"])))
    print("threads %d, repetitions %d, %d generated tokens, peers %s" % (a.threads, a.repetitions, a.n_predict,
                                                                       ", ".join(a.peers)))
    cases = []
    want = a.cases.split(",")
    if any(c.startswith("llama") for c in want):
        llama = ensure_checkpoint(a.work, "llama", tiny=False)
        tok = Tokenizer(tok_exe, llama)
        for c in want:
            if c.startswith("llama"):
                target = int(c[len("llama"):])
                text, count = prose_prefix(tok, target)
                cases.append({"case": c, "model": llama, "text": text, "prompt_tokens": count, "image": None,
                              "image_tokens": 0, "text_bytes": weight_bytes(llama)})
    if "llava" in want:
        llava = ensure_checkpoint(a.work, "llava", tiny=False)
        tok = Tokenizer(tok_exe, llava)
        with open(os.path.join(llava, "config.json")) as f:
            image_seq = json.load(f)["image_seq_length"]
        count = len(tok.prompt_ids("llava", [LLAVA_TEXT])[0]) - 1 + image_seq
        cases.append({"case": "llava", "model": llava, "text": LLAVA_TEXT, "prompt_tokens": count, "image": a.image,
                      "image_tokens": image_seq, "text_bytes": weight_bytes(llava, "language_model.")})

    results = {"machine": info, "args": vars(a), "cases": []}
    t_all = time.perf_counter()
    for case in cases:
        runs = {"fusionlm": []}
        for p in a.peers:
            runs["torch-" + p] = []
        for rep in range(a.repetitions):
            order = list(runs)
            if rep % 2:
                order.reverse()
            for who in order:
                if who == "fusionlm":
                    r = run_json(fusionlm_cmd(exe, case["model"], case["text"], a.n_predict, a.threads, case["image"]),
                                 "fusionlm-run")
                    if r["prompt_tokens"] != case["prompt_tokens"]:
                        log("note: fusionlm-run counted %d prompt tokens, the tokenizer here %d; the peer uses %d" %
                            (r["prompt_tokens"], case["prompt_tokens"], r["prompt_tokens"]))
                        case["prompt_tokens"] = r["prompt_tokens"]
                else:
                    r = run_json(peer_cmd(case["model"], a.n_predict, a.threads, who[len("torch-"):],
                                          prompt_tokens=case["prompt_tokens"], image=case["image"]), "torch_peer")
                r.pop("text", None)
                runs[who].append(r)
                log("%s rep %d %s: prompt %d, vision %.2f s, prefill %.2f tok/s, decode %.2f tok/s (wall %.0f s)" % (
                    case["case"], rep + 1, who, r["prompt_tokens"], r["vision_s"], r["prefill_tokens_per_s"],
                    r["decode_tokens_per_s"], r["wall_s"]))
        results["cases"].append(dict(case, runs=runs))
    total = time.perf_counter() - t_all

    print()
    peers = ["torch-" + p for p in a.peers]
    head = "| phase | fusionlm median (range) | " + " | ".join("%s median (range) | ratio" % p for p in peers) + " |"
    print(head)
    print("| --- | ---: | " + " | ".join("---: | ---:" for _ in peers) + " |")
    for case in results["cases"]:
        runs = case["runs"]
        phases = []
        if case["image"]:
            phases.append(("vision, 1 image 336 px (s)", "vision_s", False))
        image_part = ", %d of them image" % case["image_tokens"] if case["image"] else ""
        phases.append(("prefill %d tokens%s (tok/s)" % (case["prompt_tokens"], image_part), "prefill_tokens_per_s",
                       True))
        phases.append(("decode after %d (tok/s)" % case["prompt_tokens"], "decode_tokens_per_s", True))
        for label, key, faster_is_higher in phases:
            cells = []
            ours, ours_s = spread([r[key] for r in runs["fusionlm"]])
            cells.append("%.3g (%s)" % (ours, ours_s) if ours_s else "%.3g" % ours)
            for p in peers:
                theirs, theirs_s = spread([r[key] for r in runs[p]])
                ratio = (ours / theirs if faster_is_higher else theirs / ours) if ours and theirs else float("nan")
                cells.append(("%.3g (%s)" % (theirs, theirs_s) if theirs_s else "%.3g" % theirs))
                cells.append("%.2fx" % ratio)
            print("| %s %s | %s |" % (case["case"], label, " | ".join(cells)))
    print()
    print("ratio = fusionlm speed / torch speed (vision: torch seconds / fusionlm seconds); above 1: fusionlm faster")
    for case in results["cases"]:
        gb = case["text_bytes"] / 1e9
        # an f32 peer reads its upcast copy: twice the checkpoint's bf16 bytes per token
        parts = ["%s %.1f GB/s" % (who, gb * (2 if "f32" in who else 1) *
                                   statistics.median(r["decode_tokens_per_s"] for r in rs))
                 for who, rs in case["runs"].items()]
        line = "%s decode: %.3f GB of bf16 decoder weights (x2 for f32 peers) x tokens/s = %s" % (
            case["case"], gb, ", ".join(parts))
        if a.bandwidth:
            ours = gb * statistics.median(r["decode_tokens_per_s"] for r in case["runs"]["fusionlm"])
            line += " (fusionlm %.0f%% of %.1f GB/s)" % (100 * ours / a.bandwidth, a.bandwidth)
        print(line)
    print("total %.0f s; load average now %s" % (total, " ".join(open("/proc/loadavg").read().split()[:3])))
    os.makedirs(a.work, exist_ok=True)
    out = os.path.join(a.work, "results-%s.json" % datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print("raw results: %s" % out)
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description="fusionlm-run vs the PyTorch peer (see the module docstring)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("-n", "--n-predict", type=int, default=32)
    ap.add_argument("--peer", default="bf16",
                    help="comma-separated peer variants: bf16 (the issue's measurement), f32, and either with "
                         "-gemv (one-row linears through torch.mv)")
    ap.add_argument("--cases", default="llama128,llama512,llava",
                    help="comma-separated: llama<N> (chat prompt of N tokens), llava (one image)")
    ap.add_argument("--work", default=os.path.join(REPO, "build", "peers"), help="checkpoints and results")
    ap.add_argument("--image", default=os.path.join(REPO, "tests", "data", "images", "coffee.jpg"),
                    help="the llava case's photo")
    ap.add_argument("--fusionlm-run", help="fusionlm-run binary (default $FUSIONLM_RUN or build/examples/)")
    ap.add_argument("--fusionlm-tokenize", help="fusionlm-tokenize binary (default: next to fusionlm-run)")
    ap.add_argument("--bandwidth", type=float, help="the machine's measured read bandwidth, GB/s (for the %% line)")
    ap.add_argument("--check", action="store_true",
                    help="instead of measuring: the peer against the reference cases and against fusionlm-run")
    a = ap.parse_args(argv)
    a.peers = a.peer.split(",")
    for p in a.peers:
        if p not in ("bf16", "f32", "bf16-gemv", "f32-gemv"):
            ap.error("--peer: unknown variant '%s' (bf16, f32, bf16-gemv, f32-gemv)" % p)
    exe, tok_exe = find_tools(a)
    return check(a, exe, tok_exe) if a.check else measure(a, exe, tok_exe)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
