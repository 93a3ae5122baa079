// fusionlm-inspect DIR: validates a Hugging Face checkpoint folder the way the loader does (config.json
// and every safetensors shard) and prints its architecture, config summary and tensors.
// Exit 0 when valid; otherwise exit 2 with one line on stderr naming the file and the fault.
#include <fusionlm/io/checkpoint.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/weights.hpp>
#include <fusionlm/models/mixtral.hpp>
#include <fusionlm/models/mllama.hpp>
#include <fusionlm/models/olmoe.hpp>
#include <fusionlm/models/qwen2_moe.hpp>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>

namespace {

using namespace fusionlm;

std::string human(double v, const char* unit) {
    const char* prefixes[] = {"", " K", " M", " G", " T"};
    int p = 0;
    while (v >= 1000.0 && p < 4) v /= 1000.0, ++p;
    char buf[64];
    std::snprintf(buf, sizeof buf, p ? "%.2f%s%s" : "%.0f%s%s", v, prefixes[p], unit);
    return buf;
}

std::string list(const std::vector<std::int64_t>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
}

std::string rope(const std::optional<RopeScaling>& r) {
    if (!r) return "none";
    std::ostringstream o;
    o << (r->rope_type.empty() ? "default" : r->rope_type) << " (factor " << r->factor;
    if (r->rope_type == "llama3")
        o << ", low " << r->low_freq_factor << ", high " << r->high_freq_factor << ", original "
          << r->original_max_position_embeddings;
    o << ")";
    return o.str();
}

template <class C>
void print_decoder(std::ostream& o, const char* label, const C& c) {
    o << label << ": " << c.num_hidden_layers << " layers, hidden " << c.hidden_size << ", intermediate "
      << c.intermediate_size << ", heads " << c.num_attention_heads << " / kv " << c.num_key_value_heads
      << ", head_dim " << c.head_dim << ", vocab " << c.vocab_size << ", act " << c.hidden_act << "\n"
      << "  rms_norm_eps " << c.rms_norm_eps << ", rope_theta " << c.rope_theta << ", rope_scaling "
      << rope(c.rope_scaling) << ", tie_word_embeddings " << (c.tie_word_embeddings ? "true" : "false")
      << ", eos " << list(c.eos_token_id) << "\n";
}

void print_family(std::ostream& o, const FamilyConfig& family) {
    std::visit(
        [&](const auto& c) {
            using T = std::decay_t<decltype(c)>;
            if constexpr (std::is_same_v<T, std::monostate>) {
                o << "family: not supported by fusionlm (tensors are still validated)\n";
            } else if constexpr (std::is_same_v<T, MllamaConfig>) {
                const auto& v = c.vision_config;
                o << "vision: " << v.num_hidden_layers << " local + " << v.num_global_layers << " global layers, hidden "
                  << v.hidden_size << ", heads " << v.attention_heads << ", tile " << v.image_size << " px, patch "
                  << v.patch_size << ", max_num_tiles " << v.max_num_tiles << ", intermediate_layers_indices "
                  << list(v.intermediate_layers_indices) << ", vision_output_dim " << v.vision_output_dim << "\n";
                print_decoder(o, "text", c.text_config);
                o << "  cross_attention_layers " << list(c.text_config.cross_attention_layers)
                  << ", image_token_index " << c.image_token_index << "\n";
            } else if constexpr (std::is_same_v<T, LlavaConfig>) {
                const auto& v = c.vision_config;
                o << "vision: CLIP " << v.num_hidden_layers << " layers, hidden " << v.hidden_size << ", heads "
                  << v.num_attention_heads << ", image " << v.image_size << " px, patch " << v.patch_size << ", act "
                  << v.hidden_act << "\n"
                  << "projector: " << c.projector_hidden_act << ", vision_feature_layer " << c.vision_feature_layer
                  << ", strategy " << c.vision_feature_select_strategy << ", image_seq_length " << c.image_seq_length
                  << ", image_token_index " << c.image_token_index << "\n";
                print_decoder(o, "text", c.text_config);
            } else if constexpr (std::is_same_v<T, MixtralConfig>) {
                print_decoder(o, "text", c);
                o << "  experts " << c.num_local_experts << ", top-k " << c.num_experts_per_tok << "\n";
            } else if constexpr (std::is_same_v<T, Qwen2MoeConfig>) {
                print_decoder(o, "text", c);
                o << "  experts " << c.num_experts << ", top-k " << c.num_experts_per_tok << ", moe_intermediate "
                  << c.moe_intermediate_size << ", shared_expert_intermediate " << c.shared_expert_intermediate_size
                  << ", norm_topk_prob " << (c.norm_topk_prob ? "true" : "false") << "\n";
            } else if constexpr (std::is_same_v<T, OlmoeConfig>) {
                print_decoder(o, "text", c);
                o << "  experts " << c.num_experts << ", top-k " << c.num_experts_per_tok << ", norm_topk_prob "
                  << (c.norm_topk_prob ? "true" : "false") << "\n";
            } else {
                print_decoder(o, "text", c);
            }
        },
        family);
}

// A family we implement binds every tensor it needs, so a missing, mis-shaped or unexpected tensor
// is reported here exactly as the loader would report it.
void check_family_weights(const ModelConfig& config, const Checkpoint& ckpt) {
    WeightBinder w(ckpt);
    std::visit(
        [&](const auto& c) {
            using C = std::decay_t<decltype(c)>;
            if constexpr (std::is_same_v<C, MllamaConfig>) bind_mllama(w, c);
            else if constexpr (std::is_same_v<C, MixtralConfig>) bind_mixtral(w, c);
            else if constexpr (std::is_same_v<C, Qwen2MoeConfig>) bind_qwen2_moe(w, c);
            else if constexpr (std::is_same_v<C, OlmoeConfig>) bind_olmoe(w, c);
        },
        config.family);
}

int inspect(const std::filesystem::path& dir) {
    // Validate everything before printing anything, so a bad folder yields only the error line.
    const ModelConfig config = load_config(dir / "config.json");
    const Checkpoint ckpt = Checkpoint::open(dir);
    check_family_weights(config, ckpt);

    std::ostringstream o;
    o << "checkpoint: " << dir.string() << "\n";
    o << "model_type: " << config.model_type;
    for (const auto& a : config.architectures) o << " (" << a << ")";
    o << (config.supported() ? "" : " [unsupported]") << "\n";
    if (!config.torch_dtype.empty()) o << "torch_dtype: " << config.torch_dtype << "\n";
    print_family(o, config.family);

    o << "shards: " << ckpt.shards().size() << "\n";
    for (const auto& s : ckpt.shards()) {
        o << "  " << s->path().filename().string() << ": " << s->size() << " tensors";
        if (s->copied_tensors()) o << " (" << s->copied_tensors() << " misaligned, copied)";
        o << "\n";
    }
    std::map<std::string, std::int64_t> per_dtype;
    o << "tensors: " << ckpt.size() << "\n";
    for (const TensorView* t : ckpt.tensors()) {
        o << "  " << t->name << "  " << dtype_name(t->dtype) << "  " << shape_str(t->shape) << "\n";
        per_dtype[std::string(dtype_name(t->dtype))] += t->numel();
    }
    o << "parameters: " << ckpt.parameter_count() << " (" << human(double(ckpt.parameter_count()), "") << ")";
    for (const auto& [name, n] : per_dtype) o << ", " << name << " " << n;
    o << "\n";
    o << "bytes: " << ckpt.byte_count() << " (" << human(double(ckpt.byte_count()), "B") << ")\n";
    std::cout << o.str();
    return 0;
}

// One line: the error message with any line breaks flattened.
int fail(const std::string& msg) {
    std::string line = msg;
    for (char& ch : line)
        if (ch == '\n' || ch == '\r') ch = ' ';
    std::cerr << "fusionlm-inspect: " << line << "\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) return fail("usage: fusionlm-inspect CHECKPOINT_DIR");
    try {
        return inspect(argv[1]);
    } catch (const std::bad_alloc&) {
        return fail(std::string(argv[1]) + ": out of memory");
    } catch (const std::exception& e) {
        return fail(e.what());
    } catch (...) {
        return fail(std::string(argv[1]) + ": unknown error");
    }
}
