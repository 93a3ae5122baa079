// fusionlm-compare: the two ways of feeding images to a decoder, on equal footing, with random weights.
// The models, the workload and the analytic costs come from models/fusion_comparison.hpp: one CLIP ViT
// and one Llama decoder (same self-attention weights), composed as cross_attention (Mllama-style gated
// cross-attention layers) and early_fusion (LLaVA-style image tokens), each with a dense MLP and an MoE
// (8 experts, top-2, the same active parameters per token). Swept over images per prompt, image size,
// text prompt length and generated tokens; per configuration: vision encode, fusion attach, prefill and
// decode times (medians over --repeats fresh sessions; decode tokens/s from the median step, which a
// shared machine's preemptions disturb least), analytic prefill and decode FLOPs, and cache bytes. The
// vision encode is the same computation for every strategy, so it runs once per image size and image
// count. A run of G generated tokens is the first G tokens of the run for the largest G. Prints a table
// (or --json) and writes an SVG plot (prefill seconds and decode tokens/s against images per prompt).
//   fusionlm-compare [-t THREADS] [--repeats N] [--json] [--svg FILE] [--tiny]
//                    [--images LIST] [--sizes LIST] [--prompts LIST] [--gen LIST]
// Errors: one line on stderr, exit 2.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/tensor.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/fusion/cross_attention.hpp>
#include <fusionlm/generate.hpp>
#include <fusionlm/io/random_weights.hpp>
#include <fusionlm/models/fusion_comparison.hpp>
#include <fusionlm/text_model/decoder.hpp>
#include <fusionlm/text_model/mlp.hpp>
#include <fusionlm/text_model/moe.hpp>
#include <fusionlm/vision/clip_vit.hpp>

namespace fs = std::filesystem;
using namespace fusionlm;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------- arguments

const char* kUsage =
    "usage: fusionlm-compare [-t THREADS] [--repeats N] [--json] [--svg FILE] [--tiny]\n"
    "                        [--images LIST] [--sizes LIST] [--prompts LIST] [--gen LIST]\n"
    "  LIST: comma-separated positive integers, e.g. --images 1,2,4\n";

struct Args {
    int threads = 0;  // 0: all cores
    int repeats = 1;
    bool json = false, tiny = false, help = false;
    fs::path svg = "fusionlm-compare.svg";
    std::optional<std::vector<std::int64_t>> images, sizes, prompts, gen;
};

std::int64_t parse_count(const std::string& flag, const std::string& text, std::int64_t max) {
    std::int64_t v = 0;
    bool ok = !text.empty() && text.size() <= 9;
    for (char c : text) ok = ok && c >= '0' && c <= '9';
    if (ok) v = std::stoll(text);
    if (!ok || v < 1 || v > max)
        throw InputError(flag + ": '" + text + "' is not a whole number from 1 to " + std::to_string(max));
    return v;
}

std::vector<std::int64_t> parse_list(const std::string& flag, const std::string& text, std::int64_t max) {
    std::vector<std::int64_t> values;
    std::size_t at = 0;
    while (true) {
        const std::size_t comma = text.find(',', at);
        values.push_back(parse_count(flag, text.substr(at, comma - at), max));
        if (comma == std::string::npos) return values;
        at = comma + 1;
    }
}

Args parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw InputError(flag + ": missing value");
            return argv[++i];
        };
        if (flag == "-t" || flag == "--threads") a.threads = int(parse_count(flag, value(), 1024));
        else if (flag == "--repeats") a.repeats = int(parse_count(flag, value(), 1000));
        else if (flag == "--json") a.json = true;
        else if (flag == "--svg") a.svg = value();
        else if (flag == "--tiny") a.tiny = true;
        else if (flag == "--images") a.images = parse_list(flag, value(), 64);
        else if (flag == "--sizes") a.sizes = parse_list(flag, value(), 1344);
        else if (flag == "--prompts") a.prompts = parse_list(flag, value(), 8192);
        else if (flag == "--gen") a.gen = parse_list(flag, value(), 4096);
        else if (flag == "-h" || flag == "--help") a.help = true;
        else throw InputError("unknown argument '" + flag + "'");
    }
    return a;
}

// ---------------------------------------------------------------- measuring

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Point {
    std::string strategy, mlp;
    std::int64_t image_size = 0, images = 0, prompt = 0, generated = 0;
    std::int64_t sequence = 0, vision_tokens_per_image = 0, image_tokens_per_image = 0;
    double vision_s = 0, vision_flops = 0, attach_s = 0, prefill_s = 0, prefill_flops = 0, decode_s = 0;
    double decode_step_s = 0;  // median time of one decode step (robust to preemption on a shared machine)
    double decode_flops = 0, decode_weight_bytes = 0;  // analytic, per decode token
    std::size_t kv_bytes = 0, cross_kv_bytes = 0, fusion_state_bytes = 0;

    double prefill_gflops() const { return prefill_flops / prefill_s * 1e-9; }
    std::optional<double> decode_tokens_per_s() const {
        if (generated <= 1) return std::nullopt;
        return 1.0 / decode_step_s;
    }
    double total_s() const { return vision_s + attach_s + prefill_s + decode_s; }
};

// One sweep point for one model: image features already encoded (vision time measured by the caller).
struct Workload {
    std::int64_t image_size = 0, images = 0, prompt = 0;
    const std::vector<std::int64_t>* gens = nullptr;
    const RowMatrix* features = nullptr;  // [images * vision tokens, vision hidden]
    double vision_s = 0, vision_flops = 0;
};

// Runs attach, prefill and decode `repeats` times on fresh sessions; one Point per generated-token count,
// each measurement the median over the repeats.
template <class Model>
std::vector<Point> run_model(ThreadPool& pool, const Model& model, const Workload& w, int repeats,
                             const std::string& strategy, const std::string& mlp, const ComparisonPrompt& prompt,
                             std::int64_t image_tokens_per_image, double flops) {
    const std::vector<std::int64_t>& gens = *w.gens;
    const std::int64_t seq = prompt.seq(), steps = gens.back() - 1;
    const TokenBatch tokens = prompt.tokens();
    std::vector<double> attach, prefill;
    std::vector<std::vector<double>> decode(gens.size()), steps_s(gens.size());
    std::vector<double> step_times;
    std::vector<Point> points(gens.size());
    for (int r = 0; r < repeats; ++r) {
        auto session = model.new_session(1);
        const auto t_attach = Clock::now();
        model.fusion().attach(pool, session.fusion, std::span<const RowMatrix>(w.features, 1),
                              image_placement(model.fusion(), prompt));
        attach.push_back(seconds_since(t_attach));

        const auto t_prefill = Clock::now();
        RowMatrix logits = model.forward(pool, session, tokens, Logits::Last);
        prefill.push_back(seconds_since(t_prefill));

        std::vector<std::int64_t> next{argmax(logits.row(0))};
        double decoding = 0;
        for (std::int64_t step = 0; step <= steps; ++step) {
            for (std::size_t g = 0; g < gens.size(); ++g) {
                if (gens[g] - 1 != step) continue;
                decode[g].push_back(decoding);
                steps_s[g].insert(steps_s[g].end(), step_times.begin(), step_times.end());
                points[g].kv_bytes = kv_cache_bytes(session.decoder);
                points[g].cross_kv_bytes = cross_kv_bytes(session.fusion);
                points[g].fusion_state_bytes = fusion_state_bytes(session.fusion);
            }
            if (step == steps) break;
            const auto t_step = Clock::now();
            logits = model.forward(pool, session, TokenBatch{1, 1, next, {}, {}}, Logits::Last);
            step_times.push_back(seconds_since(t_step));
            decoding += step_times.back();
            next[0] = argmax(logits.row(0));
        }
        if (!logits.allFinite())
            throw ShapeError(strategy + "/" + mlp + ": non-finite logits (random weights out of range)");
    }
    for (std::size_t g = 0; g < gens.size(); ++g) {
        Point& p = points[g];
        p.strategy = strategy;
        p.mlp = mlp;
        p.image_size = w.image_size;
        p.images = w.images;
        p.prompt = w.prompt;
        p.generated = gens[g];
        p.sequence = seq;
        p.vision_tokens_per_image = model.vision().tokens();
        p.image_tokens_per_image = image_tokens_per_image;
        p.vision_s = w.vision_s;
        p.vision_flops = w.vision_flops;
        p.attach_s = median(attach);
        p.prefill_s = median(prefill);
        p.prefill_flops = flops;
        p.decode_s = median(decode[g]);
        p.decode_step_s = steps_s[g].empty() ? 0.0 : median(steps_s[g]);
    }
    return points;
}

// The analytic decode cost per token, in the middle of each point's decode steps.
template <class Mlp>
void set_decode_cost(std::vector<Point>& points, const ComparisonShapes& s, std::int64_t cross_layers,
                     std::int64_t vision_tokens) {
    for (Point& p : points) {
        if (p.generated <= 1) continue;
        const DecodeCost cost =
            decode_cost<Mlp>(s, double(p.sequence) + double(p.generated - 2) / 2, cross_layers, vision_tokens);
        p.decode_flops = cost.flops;
        p.decode_weight_bytes = cost.weight_bytes;
    }
}

template <class Mlp>
std::vector<Point> run_cross(ThreadPool& pool, const CrossAttentionVlm<Mlp>& model, const ComparisonShapes& s,
                             const Workload& w, int repeats, const std::string& mlp) {
    const ComparisonPrompt prompt = make_comparison_prompt(s, w.prompt, w.images, 1, /*cross_attention=*/true);
    const std::int64_t vision_tokens = w.images * model.vision().tokens();
    const double flops =
        prefill_flops<Mlp>(s, prompt.seq(), std::int64_t(model.fusion().layer_indices().size()), vision_tokens);
    std::vector<Point> points = run_model(pool, model, w, repeats, "cross_attention", mlp, prompt, 1, flops);
    set_decode_cost<Mlp>(points, s, std::int64_t(model.fusion().layer_indices().size()), vision_tokens);
    return points;
}

template <class Mlp>
std::vector<Point> run_early(ThreadPool& pool, const EarlyFusionVlm<Mlp>& model, const ComparisonShapes& s,
                             const Workload& w, int repeats, const std::string& mlp) {
    const std::int64_t per_image = model.fusion().features_per_image();
    const ComparisonPrompt prompt = make_comparison_prompt(s, w.prompt, w.images, per_image, /*cross_attention=*/false);
    // The projector runs at attach; prefill is the decoder alone.
    const double flops = prefill_flops<Mlp>(s, prompt.seq(), 0, 0);
    std::vector<Point> points = run_model(pool, model, w, repeats, "early_fusion", mlp, prompt, per_image, flops);
    set_decode_cost<Mlp>(points, s, 0, 0);
    return points;
}

// ---------------------------------------------------------------- output

json to_json(const Point& p) {
    json j{{"strategy", p.strategy},
           {"mlp", p.mlp},
           {"image_size", p.image_size},
           {"images", p.images},
           {"prompt_tokens", p.prompt},
           {"generated", p.generated},
           {"sequence_tokens", p.sequence},
           {"vision_tokens_per_image", p.vision_tokens_per_image},
           {"image_tokens_per_image", p.image_tokens_per_image},
           {"vision_s", p.vision_s},
           {"vision_gflops_per_s", p.vision_flops / p.vision_s * 1e-9},
           {"attach_s", p.attach_s},
           {"prefill_s", p.prefill_s},
           {"prefill_flops", p.prefill_flops},
           {"prefill_gflops_per_s", p.prefill_gflops()},
           {"decode_s", p.decode_s},
           {"decode_step_median_s", p.decode_step_s},
           {"decode_flops_per_token", p.decode_flops},
           {"decode_weight_bytes_per_token", p.decode_weight_bytes},
           {"total_s", p.total_s()},
           {"kv_cache_bytes", p.kv_bytes},
           {"cross_kv_bytes", p.cross_kv_bytes},
           {"cache_bytes", p.kv_bytes + p.cross_kv_bytes},
           {"fusion_state_bytes", p.fusion_state_bytes}};
    const auto tps = p.decode_tokens_per_s();
    j["decode_tokens_per_s"] = tps ? json(*tps) : json(nullptr);
    return j;
}

std::string label(const std::string& strategy, const std::string& mlp) {
    return (strategy == "cross_attention" ? "cross-attention" : "early fusion") + std::string(" (") +
           (mlp == "moe" ? "MoE" : "dense") + ")";
}

// One row per run: prefill-side numbers, then decode speed and cache at the largest generated count.
void print_table(const std::vector<Point>& points, std::int64_t gen_max, int threads) {
    std::printf("fusionlm-compare: %d thread(s); medians; decode = 1 / median step time, cache after %lld generated "
                "tokens (self-attention KV + cross-attention K/V)\n",
                threads, static_cast<long long>(gen_max));
    std::printf("%-16s %-5s %4s %4s %5s %6s %9s %9s %9s %8s %10s %10s\n", "strategy", "mlp", "px", "imgs", "text", "seq",
                "vision_s", "attach_s", "prefill_s", "GFLOP/s", "decode t/s", "cache_KiB");
    for (const Point& p : points) {
        if (p.generated != gen_max) continue;
        const auto tps = p.decode_tokens_per_s();
        char decode[32];
        if (tps) std::snprintf(decode, sizeof decode, "%.1f", *tps);
        else std::snprintf(decode, sizeof decode, "-");
        std::printf("%-16s %-5s %4lld %4lld %5lld %6lld %9.4f %9.4f %9.4f %8.1f %10s %10.1f\n", p.strategy.c_str(),
                    p.mlp.c_str(), static_cast<long long>(p.image_size), static_cast<long long>(p.images),
                    static_cast<long long>(p.prompt), static_cast<long long>(p.sequence), p.vision_s, p.attach_s,
                    p.prefill_s, p.prefill_gflops(), decode, double(p.kv_bytes + p.cross_kv_bytes) / 1024.0);
    }
}

std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// A step of 1, 2 or 5 times a power of ten giving about five ticks from 0 to at least `top`.
double nice_step(double top) {
    if (!(top > 0)) return 1;
    const double raw = top / 5, mag = std::pow(10.0, std::floor(std::log10(raw))), norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

struct Series {
    std::string strategy, mlp, name, color, dash, marker;
    std::vector<std::pair<double, double>> xy;
};

// One panel: axes, ticks, grid, a polyline with markers per series.
void svg_panel(std::ostream& o, double x0, double y0, double w, double h, const std::string& title,
               const std::string& ylabel, const std::vector<std::int64_t>& xs, const std::vector<Series>& series) {
    double ymax = 0;
    for (const auto& s : series)
        for (const auto& [x, y] : s.xy) ymax = std::max(ymax, y);
    const double step = nice_step(ymax), ytop = ymax > 0 ? std::ceil(ymax / step) * step : 1;
    const double xmin = double(xs.front()), xmax = double(xs.back());
    const auto px = [&](double x) { return xmax > xmin ? x0 + 30 + (x - xmin) / (xmax - xmin) * (w - 60) : x0 + w / 2; };
    const auto py = [&](double y) { return y0 + h - y / ytop * h; };

    o << "<text x=\"" << x0 + w / 2 << "\" y=\"" << y0 - 12 << "\" text-anchor=\"middle\" font-size=\"14\">" << title
      << "</text>\n";
    for (double y = 0; y <= ytop + step / 2; y += step) {
        o << "<line x1=\"" << x0 << "\" y1=\"" << py(y) << "\" x2=\"" << x0 + w << "\" y2=\"" << py(y)
          << "\" stroke=\"#ddd\"/>\n";
        o << "<text x=\"" << x0 - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\" font-size=\"11\">" << fmt(y)
          << "</text>\n";
    }
    for (std::int64_t x : xs) {
        o << "<line x1=\"" << px(double(x)) << "\" y1=\"" << y0 + h << "\" x2=\"" << px(double(x)) << "\" y2=\""
          << y0 + h + 5 << "\" stroke=\"#000\"/>\n";
        o << "<text x=\"" << px(double(x)) << "\" y=\"" << y0 + h + 18 << "\" text-anchor=\"middle\" font-size=\"11\">"
          << x << "</text>\n";
    }
    o << "<line x1=\"" << x0 << "\" y1=\"" << y0 + h << "\" x2=\"" << x0 + w << "\" y2=\"" << y0 + h
      << "\" stroke=\"#000\"/>\n";
    o << "<line x1=\"" << x0 << "\" y1=\"" << y0 << "\" x2=\"" << x0 << "\" y2=\"" << y0 + h << "\" stroke=\"#000\"/>\n";
    o << "<text x=\"" << x0 + w / 2 << "\" y=\"" << y0 + h + 36 << "\" text-anchor=\"middle\" font-size=\"12\">"
      << "images per prompt</text>\n";
    o << "<text transform=\"translate(" << x0 - 46 << "," << y0 + h / 2 << ") rotate(-90)\" text-anchor=\"middle\" "
      << "font-size=\"12\">" << ylabel << "</text>\n";
    for (const auto& s : series) {
        if (s.xy.empty()) continue;
        o << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"2\"";
        if (!s.dash.empty()) o << " stroke-dasharray=\"" << s.dash << "\"";
        o << " points=\"";
        for (const auto& [x, y] : s.xy) o << px(x) << "," << py(y) << " ";
        o << "\"/>\n";
        for (const auto& [x, y] : s.xy) {
            if (s.marker == "circle")
                o << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"4\" fill=\"" << s.color << "\"/>\n";
            else
                o << "<rect x=\"" << px(x) - 4 << "\" y=\"" << py(y) - 4 << "\" width=\"8\" height=\"8\" fill=\""
                  << s.color << "\"/>\n";
        }
    }
}

// Prefill seconds and decode tokens/s against images per prompt, at one prompt length and image size.
void write_svg(const fs::path& file, const std::vector<Point>& points, std::int64_t image_size, std::int64_t prompt,
               std::int64_t gen_max, int threads) {
    std::vector<std::int64_t> xs;
    for (const Point& p : points)
        if (std::find(xs.begin(), xs.end(), p.images) == xs.end()) xs.push_back(p.images);
    std::sort(xs.begin(), xs.end());
    std::vector<Series> prefill, decode;
    for (const char* strategy : {"cross_attention", "early_fusion"})
        for (const char* mlp : {"dense", "moe"}) {
            Series s{strategy, mlp, label(strategy, mlp), std::string(strategy) == "cross_attention" ? "#1f77b4" : "#d62728",
                     std::string(mlp) == "moe" ? "6,4" : "", std::string(mlp) == "moe" ? "square" : "circle", {}};
            Series d = s;
            for (const Point& p : points) {
                if (p.strategy != strategy || p.mlp != mlp || p.image_size != image_size || p.prompt != prompt ||
                    p.generated != gen_max)
                    continue;
                s.xy.emplace_back(double(p.images), p.prefill_s);
                if (const auto tps = p.decode_tokens_per_s()) d.xy.emplace_back(double(p.images), *tps);
            }
            prefill.push_back(std::move(s));
            decode.push_back(std::move(d));
        }

    std::ostringstream o;
    const double W = 960, H = 470;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
      << " " << H << "\" font-family=\"sans-serif\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
    o << "<text x=\"" << W / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">fusionlm-compare: "
      << "cross-attention vs early fusion, " << image_size << " px images, " << prompt << " text tokens, " << threads
      << " thread(s)</text>\n";
    svg_panel(o, 90, 70, 340, 280, "prefill (s, lower is better)", "seconds", xs, prefill);
    svg_panel(o, 560, 70, 340, 280,
              "decode, median step of " + std::to_string(gen_max - 1) + " (tokens/s, higher is better)", "tokens / s", xs,
              decode);
    // Legend below both panels.
    double lx = 90;
    const double ly = 440;
    for (const auto& s : prefill) {
        o << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 30 << "\" y2=\"" << ly << "\" stroke=\""
          << s.color << "\" stroke-width=\"2\"";
        if (!s.dash.empty()) o << " stroke-dasharray=\"" << s.dash << "\"";
        o << "/>\n";
        if (s.marker == "circle")
            o << "<circle cx=\"" << lx + 15 << "\" cy=\"" << ly << "\" r=\"4\" fill=\"" << s.color << "\"/>\n";
        else
            o << "<rect x=\"" << lx + 11 << "\" y=\"" << ly - 4 << "\" width=\"8\" height=\"8\" fill=\"" << s.color
              << "\"/>\n";
        o << "<text x=\"" << lx + 36 << "\" y=\"" << ly + 4 << "\" font-size=\"12\">" << s.name << "</text>\n";
        lx += 205;
    }
    o << "</svg>\n";

    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << o.str();
    out.close();
    if (!out) throw InputError("--svg: cannot write '" + file.string() + "'");
}

// ---------------------------------------------------------------- the sweep

int run(const Args& args) {
    if (args.help) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    const ComparisonShapes shapes = args.tiny ? ComparisonShapes::tiny() : ComparisonShapes::standard();
    const std::vector<std::int64_t> images = args.images.value_or(std::vector<std::int64_t>{1, 2, 4});
    const std::vector<std::int64_t> sizes =
        args.sizes.value_or(args.tiny ? std::vector<std::int64_t>{28, 56} : std::vector<std::int64_t>{112, 224});
    const std::vector<std::int64_t> prompts =
        args.prompts.value_or(args.tiny ? std::vector<std::int64_t>{8, 16} : std::vector<std::int64_t>{32, 256});
    const std::vector<std::int64_t> gens =
        args.gen.value_or(args.tiny ? std::vector<std::int64_t>{1, 4} : std::vector<std::int64_t>{1, 32});
    for (std::int64_t px : sizes)
        if (px < shapes.vision.patch_size || px % shapes.vision.patch_size != 0)
            throw InputError("--sizes: " + std::to_string(px) + " px is not a positive multiple of the patch size " +
                             std::to_string(shapes.vision.patch_size));

    ThreadPool pool(args.threads);
    RandomWeights weights(comparison_weights_options());
    const ComparisonText text = bind_comparison_text(weights, shapes);

    std::vector<Point> points;
    for (std::int64_t px : sizes) {
        const ClipViT vit = bind_comparison_tower(weights, shapes, px);
        const auto cross_dense = make_cross_attention_model<DenseMlp>(text, shapes, vit);
        const auto cross_moe = make_cross_attention_model<MoeMlp>(text, shapes, vit);
        const auto early_dense = make_early_fusion_model<DenseMlp>(text, shapes, vit);
        const auto early_moe = make_early_fusion_model<MoeMlp>(text, shapes, vit);

        // Both strategies use the same tower on the same images: encode once per image count.
        std::map<std::int64_t, std::pair<RowMatrix, double>> encoded;
        for (std::int64_t n : images) {
            std::vector<std::vector<float>> pixels;
            for (std::int64_t i = 0; i < n; ++i)
                pixels.push_back(comparison_pixels(std::size_t(vit.channels() * px * px), std::uint32_t(i + 1)));
            std::vector<double> times;
            RowMatrix features(n * vit.tokens(), vit.hidden_size());
            for (int r = 0; r < args.repeats; ++r) {
                const auto t0 = Clock::now();
                for (std::int64_t i = 0; i < n; ++i)
                    features.middleRows(i * vit.tokens(), vit.tokens()) =
                        encode_image(vit, pool, ClipImage{pixels[std::size_t(i)]}, nullptr);
                times.push_back(seconds_since(t0));
            }
            encoded[n] = {std::move(features), median(times)};
        }

        for (std::int64_t prompt : prompts)
            for (std::int64_t n : images) {
                const Workload w{px, n, prompt, &gens, &encoded[n].first, encoded[n].second,
                                 double(n) * vit.flops(vit.output_layer())};
                const auto add = [&](std::vector<Point> batch) { points.insert(points.end(), batch.begin(), batch.end()); };
                add(run_cross(pool, cross_dense, shapes, w, args.repeats, "dense"));
                add(run_cross(pool, cross_moe, shapes, w, args.repeats, "moe"));
                add(run_early(pool, early_dense, shapes, w, args.repeats, "dense"));
                add(run_early(pool, early_moe, shapes, w, args.repeats, "moe"));
            }
    }

    const std::int64_t gen_max = gens.back();
    write_svg(args.svg, points, sizes.back(), prompts.front(), gen_max, pool.size());
    if (args.json) {
        json configs = json::array();
        for (const Point& p : points) configs.push_back(to_json(p));
        const auto slots = shapes.cross_slots();
        json doc{{"tool", "fusionlm-compare"},
                 {"threads", pool.size()},
                 {"repeats", args.repeats},
                 {"svg", args.svg.string()},
                 {"vision", {{"hidden_size", shapes.vision.hidden_size},
                             {"intermediate_size", shapes.vision.intermediate_size},
                             {"num_attention_heads", shapes.vision.num_attention_heads},
                             {"num_hidden_layers", shapes.vision.num_hidden_layers},
                             {"patch_size", shapes.vision.patch_size}}},
                 {"decoder", {{"hidden_size", shapes.hidden},
                              {"self_attention_layers", shapes.layers},
                              {"num_attention_heads", shapes.heads},
                              {"num_key_value_heads", shapes.kv_heads},
                              {"intermediate_size", shapes.intermediate},
                              {"vocab_size", shapes.vocab},
                              {"weights_dtype", "bf16"},
                              {"cross_attention_slots", slots},
                              {"moe", {{"experts", shapes.experts},
                                       {"top_k", shapes.top_k},
                                       {"expert_intermediate_size", shapes.expert_intermediate()}}}}},
                 {"configurations", std::move(configs)}};
        std::cout << doc.dump(1) << "\n";
    } else {
        print_table(points, gen_max, pool.size());
        std::printf("plot: %s\n", args.svg.string().c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse_args(argc, argv));
    } catch (const fusionlm::Error& e) {
        std::fprintf(stderr, "fusionlm-compare: %s\n", e.what());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fusionlm-compare: %s\n", e.what());
    }
    return 2;
}
