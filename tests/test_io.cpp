// io: safetensors reading and writing, malformed files, sharded checkpoints, weight binding.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "fusionlm/io/checkpoint.hpp"
#include "fusionlm/io/safetensors.hpp"
#include "fusionlm/io/weights.hpp"
#include "test_io_util.hpp"

using namespace fusionlm;
using namespace fusionlm::io_test;

namespace {

const char* const kModelCases[] = {"mllama_tiny", "llava_tiny", "mixtral_tiny", "qwen2_moe_tiny", "olmoe_tiny_bf16"};

std::string le_floats(const std::vector<float>& v) {
    std::string s(v.size() * 4, '\0');
    std::memcpy(s.data(), v.data(), s.size());
    return s;
}

}  // namespace

TEST(Safetensors, EveryGoldenFileLoads) {
    for (const char* name : kModelCases) {
        for (const char* file : {"model.safetensors", "inputs.safetensors", "expected.safetensors"}) {
            const auto f = SafetensorsFile::open(kGolden / name / file);
            EXPECT_GT(f.size(), 0u) << name << "/" << file;
            EXPECT_EQ(f.copied_tensors(), 0u) << "golden files are aligned";
            EXPECT_EQ(f.metadata().at("format"), "pt");
            for (const TensorView& t : f.tensors()) {
                ASSERT_NE(t.data, nullptr);
                EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data) % dtype_size(t.dtype), 0u) << t.name;
            }
        }
    }
    const auto pre = SafetensorsFile::open(kGolden / "preprocess" / "expected.safetensors");
    EXPECT_GT(pre.size(), 0u);
}

TEST(Safetensors, GoldenContentsReadBack) {
    const auto f = SafetensorsFile::open(kGolden / "mllama_tiny" / "model.safetensors");
    const TensorView& embed = f.get("language_model.model.embed_tokens.weight");
    EXPECT_EQ(embed.dtype, DType::F32);
    EXPECT_EQ(embed.shape, (Shape{520, 64}));
    EXPECT_EQ(f.find("no.such.tensor"), nullptr);
    expect_error<ShapeError>([&] { (void)f.get("no.such.tensor"); }, {"model.safetensors", "no.such.tensor"});

    const auto in = SafetensorsFile::open(kGolden / "mllama_tiny" / "inputs.safetensors");
    const TensorView& ids = in.get("input_ids");
    EXPECT_EQ(ids.dtype, DType::I64);
    const std::vector<std::int64_t> v = to_i64(ids);
    ASSERT_EQ(v.size(), std::size_t(ids.numel()));
    EXPECT_EQ(v[0], 500);  // item 0 starts with BOS (bos_token_id 500)
    const RowMatrix pix = to_row_matrix(in.get("pixel_values"));
    EXPECT_EQ(pix.cols(), 56);
    EXPECT_EQ(pix.rows(), in.get("pixel_values").numel() / 56);
    expect_error<ShapeError>([&] { (void)to_i64(in.get("pixel_values")); }, {"pixel_values", "F32"});
}

TEST(Safetensors, Bf16GoldenWidensExactly) {
    const auto f = SafetensorsFile::open(kGolden / "olmoe_tiny_bf16" / "model.safetensors");
    const TensorView& t = f.get("model.embed_tokens.weight");
    ASSERT_EQ(t.dtype, DType::BF16);
    const std::vector<float> w = t.to_f32();
    const auto* raw = t.as<std::uint16_t>();
    for (std::size_t i = 0; i < w.size(); ++i) ASSERT_EQ(std::bit_cast<std::uint32_t>(w[i]), std::uint32_t(raw[i]) << 16);
}

TEST(Safetensors, WriterRoundTripsEveryDtypeAligned) {
    TempDir dir;
    const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f};
    const std::vector<std::int64_t> i64 = {1, -2, 3, INT64_MAX};
    std::vector<std::uint16_t> bf16(5), f16(3);
    for (std::size_t i = 0; i < bf16.size(); ++i) bf16[i] = f32_to_bf16(float(i) * 0.75f - 1.0f);
    for (std::size_t i = 0; i < f16.size(); ++i) f16[i] = f32_to_f16(float(i) + 0.5f);
    const std::vector<std::uint8_t> u8 = {1, 2, 3};
    std::vector<OwnedTensor> ts;
    ts.push_back(OwnedTensor::from<std::uint8_t>("u8", DType::U8, {3}, u8));
    ts.push_back(OwnedTensor::from<std::uint16_t>("b.bf16", DType::BF16, {5}, bf16));
    ts.push_back(OwnedTensor::f32("a.f32", {2, 3}, f32));
    ts.push_back(OwnedTensor::from<std::uint16_t>("h.f16", DType::F16, {3, 1}, f16));
    ts.push_back(OwnedTensor::i64("ids", {2, 2}, i64));
    ts.push_back(OwnedTensor::f32("empty", {0, 4}, {}));
    write_safetensors(dir / "out.safetensors", ts);

    const std::string bytes = read_bytes(dir / "out.safetensors");
    std::uint64_t hlen = 0;
    std::memcpy(&hlen, bytes.data(), 8);
    EXPECT_EQ(hlen % 8, 0u);
    EXPECT_EQ(bytes[8 + hlen - 1] == ' ' || bytes[8 + hlen - 1] == '}', true);

    const auto f = SafetensorsFile::open(dir / "out.safetensors");
    EXPECT_EQ(f.copied_tensors(), 0u);
    EXPECT_EQ(f.metadata().at("format"), "pt");
    ASSERT_EQ(f.size(), ts.size());
    EXPECT_EQ(f.get("a.f32").shape, (Shape{2, 3}));
    EXPECT_EQ(f.get("a.f32").to_f32(), f32);
    EXPECT_EQ(to_i64(f.get("ids")), i64);
    EXPECT_EQ(to_i64(f.get("u8")), (std::vector<std::int64_t>{1, 2, 3}));
    const auto b = f.get("b.bf16").to_f32();
    for (std::size_t i = 0; i < bf16.size(); ++i) EXPECT_EQ(b[i], bf16_to_f32(bf16[i]));
    EXPECT_EQ(f.get("h.f16").to_f32(), (std::vector<float>{0.5f, 1.5f, 2.5f}));
    EXPECT_EQ(f.get("empty").numel(), 0);

    expect_error<ShapeError>([] { (void)OwnedTensor::f32("x", {2, 2}, std::vector<float>{1.0f}); }, {"'x'", "[2, 2]"});
}

// A hand-written file whose F32, BF16 and I64 tensors start at odd addresses: each is copied once into
// aligned memory and reads back exactly (UBSan would flag a misaligned load otherwise).
TEST(Safetensors, MisalignedTensorsAreCopiedOnce) {
    TempDir dir;
    const std::vector<float> values = {1.0f, -2.5f, 3.75f, 1e-3f, 42.0f};
    const std::uint16_t bf[2] = {f32_to_bf16(0.5f), f32_to_bf16(-8.0f)};
    const std::int64_t ids[2] = {7, -9};
    std::string data = "\x05";                     // [0, 1) a U8 tensor
    data += le_floats(values);                     // [1, 21) F32
    data.append(reinterpret_cast<const char*>(bf), 4);   // [21, 25) BF16
    data.append(reinterpret_cast<const char*>(ids), 16);  // [25, 41) I64
    std::string header =
        R"({"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
        R"("w":{"dtype":"F32","shape":[5],"data_offsets":[1,21]},)"
        R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[21,25]},)"
        R"("i":{"dtype":"I64","shape":[2],"data_offsets":[25,41]}})";
    header.append((8 - header.size() % 8) % 8, ' ');  // data section 8-aligned, so offset 1 is odd
    write_bytes(dir / "m.safetensors", raw_safetensors(header, data));

    const auto f = SafetensorsFile::open(dir / "m.safetensors");
    EXPECT_EQ(f.copied_tensors(), 3u);
    const TensorView& w = f.get("w");
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(w.data) % 4, 0u);
    for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(w.as<float>()[i], values[i]);
    EXPECT_EQ(f.get("b").to_f32(), (std::vector<float>{0.5f, -8.0f}));
    EXPECT_EQ(f.get("i").as<std::int64_t>()[1], -9);
    EXPECT_EQ(to_i64(f.get("pad")), (std::vector<std::int64_t>{5}));
}

namespace {

struct Malformed {
    const char* label;
    std::string bytes;
    std::vector<std::string> fragments;  // besides the file name
};

std::vector<Malformed> malformed_cases() {
    const std::string d16(16, '\0');
    auto one = [](const std::string& entry) { return "{\"t\":" + entry + "}"; };
    return {
        {"empty", "", {"shorter than the 8-byte header length"}},
        {"truncated length", std::string("\x10\0\0", 3), {"shorter than"}},
        {"header past end", raw_safetensors("{}", "", 100), {"header length 100", "past the end"}},
        {"header absurd", raw_safetensors("{}", "", std::uint64_t(1) << 40), {"exceeds the limit"}},
        {"not json", raw_safetensors("{\"t\": [1, 2", d16), {"not valid JSON"}},
        {"binary garbage", raw_safetensors(std::string("\xff\xfe\x00\x01", 4), d16), {"not valid JSON"}},
        {"array header", raw_safetensors("[1, 2]", d16), {"not a JSON object"}},
        {"deep nesting", raw_safetensors(std::string(200, '[') + std::string(200, ']'), ""), {"nested deeper"}},
        {"metadata not object", raw_safetensors(R"({"__metadata__": 3})", ""), {"__metadata__"}},
        {"metadata value", raw_safetensors(R"({"__metadata__": {"format": 1}})", ""), {"__metadata__.format"}},
        {"entry not object", raw_safetensors(one("7"), d16), {"'t'", "not an object"}},
        {"unknown dtype", raw_safetensors(one(R"({"dtype":"F8","shape":[4],"data_offsets":[0,4]})"), d16),
         {"'t'", "unknown dtype 'F8'"}},
        {"missing dtype", raw_safetensors(one(R"({"shape":[4],"data_offsets":[0,16]})"), d16), {"'t'", "dtype"}},
        {"negative dim", raw_safetensors(one(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})"), d16),
         {"'t'", "-4", "non-negative"}},
        {"float dim", raw_safetensors(one(R"({"dtype":"F32","shape":[4.0],"data_offsets":[0,16]})"), d16),
         {"'t'", "non-negative integer"}},
        {"string shape", raw_safetensors(one(R"({"dtype":"F32","shape":"4","data_offsets":[0,16]})"), d16),
         {"'t'", "shape"}},
        {"overflowing dims",
         raw_safetensors(one(R"({"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,16]})"), d16),
         {"'t'", "more elements than int64"}},
        {"overflowing bytes",
         raw_safetensors(one(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16]})"), d16),
         {"'t'", "overflows"}},
        {"huge dim", raw_safetensors(one(R"({"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,16]})"), d16),
         {"'t'", "non-negative integer"}},
        {"offsets arity", raw_safetensors(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0]})"), d16),
         {"'t'", "data_offsets"}},
        {"negative offset", raw_safetensors(one(R"({"dtype":"F32","shape":[4],"data_offsets":[-16,0]})"), d16),
         {"'t'", "data_offsets"}},
        {"offsets past end", raw_safetensors(one(R"({"dtype":"F32","shape":[8],"data_offsets":[0,32]})"), d16),
         {"'t'", "past the data section"}},
        {"reversed offsets", raw_safetensors(one(R"({"dtype":"F32","shape":[0],"data_offsets":[16,0]})"), d16),
         {"'t'", "reversed"}},
        {"size mismatch", raw_safetensors(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})"), d16),
         {"'t'", "holds 16 bytes", "needs 12"}},
        {"overlap",
         raw_safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                         d16),
         {"'b'", "overlaps tensor 'a'"}},
    };
}

}  // namespace

TEST(Safetensors, MalformedFilesAreFormatErrorsNamingFileAndTensor) {
    TempDir dir;
    for (const Malformed& m : malformed_cases()) {
        SCOPED_TRACE(m.label);
        const auto path = dir / "bad.safetensors";
        write_bytes(path, m.bytes);
        std::vector<std::string> fragments = m.fragments;
        fragments.push_back(path.string());
        expect_error<FormatError>([&] { (void)SafetensorsFile::open(path); }, fragments);
    }
}

TEST(Safetensors, TruncatedGoldenFileIsRejected) {
    TempDir dir;
    const std::string full = read_bytes(kGolden / "mixtral_tiny" / "model.safetensors");
    for (std::size_t keep : {std::size_t(4), std::size_t(100), full.size() / 2, full.size() - 1}) {
        SCOPED_TRACE(keep);
        write_bytes(dir / "cut.safetensors", full.substr(0, keep));
        expect_error<FormatError>([&] { (void)SafetensorsFile::open(dir / "cut.safetensors"); }, {"cut.safetensors"});
    }
    expect_error<FormatError>([&] { (void)SafetensorsFile::open(dir / "absent.safetensors"); },
                              {"absent.safetensors", "cannot open"});
    expect_error<FormatError>([&] { (void)SafetensorsFile::open(dir.path()); }, {"not a regular file"});
}

namespace {

// Splits a golden single-file checkpoint into `shards` files plus an index, in `dir`.
void write_sharded(const std::filesystem::path& src, const std::filesystem::path& dir, int shards) {
    const auto f = SafetensorsFile::open(src / "model.safetensors");
    std::vector<std::vector<TensorView>> parts(static_cast<std::size_t>(shards));
    Json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", Json::object()}};
    for (std::size_t i = 0; i < f.tensors().size(); ++i) {
        const TensorView& t = f.tensors()[i];
        const std::size_t s = i % std::size_t(shards);
        parts[s].push_back(t);
        index["weight_map"][t.name] =
            "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    }
    for (int s = 0; s < shards; ++s)
        write_safetensors(dir / ("model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors"),
                          parts[std::size_t(s)]);
    write_bytes(dir / "model.safetensors.index.json", index.dump(2));
}

}  // namespace

TEST(Checkpoint, EveryGoldenCheckpointOpens) {
    for (const char* name : kModelCases) {
        const Checkpoint c = Checkpoint::open(kGolden / name);
        EXPECT_EQ(c.shards().size(), 1u);
        EXPECT_GT(c.size(), 10u) << name;
        EXPECT_GT(c.parameter_count(), 0);
        EXPECT_TRUE(std::is_sorted(c.tensors().begin(), c.tensors().end(),
                                   [](const TensorView* a, const TensorView* b) { return a->name < b->name; }));
    }
    const Checkpoint c = Checkpoint::open(kGolden / "olmoe_tiny_bf16");
    EXPECT_EQ(c.byte_count(), std::uint64_t(c.parameter_count()) * 2);
    expect_error<ShapeError>([&] { (void)c.get("model.nope"); }, {"olmoe_tiny_bf16", "model.nope"});
}

TEST(Checkpoint, ShardedLoadsIdentically) {
    TempDir dir;
    write_sharded(kGolden / "mllama_tiny", dir.path(), 3);
    const Checkpoint single = Checkpoint::open(kGolden / "mllama_tiny");
    Checkpoint sharded = Checkpoint::open(dir.path());
    EXPECT_EQ(sharded.shards().size(), 3u);
    ASSERT_EQ(sharded.size(), single.size());
    for (std::size_t i = 0; i < single.size(); ++i) {
        const TensorView& a = *single.tensors()[i];
        const TensorView& b = *sharded.tensors()[i];
        ASSERT_EQ(a.name, b.name);
        EXPECT_EQ(a.dtype, b.dtype);
        EXPECT_EQ(a.shape, b.shape);
        ASSERT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << a.name;
    }
    EXPECT_EQ(sharded.file_of(single.tensors()[0]->name).filename(), "model-00001-of-00003.safetensors");
    // Copies share the mapped shards: views stay valid after the original handle is gone.
    const TensorView* embed = sharded.find("language_model.model.embed_tokens.weight");
    const Checkpoint copy = sharded;
    sharded = Checkpoint();
    EXPECT_EQ(copy.find("language_model.model.embed_tokens.weight"), embed);
    EXPECT_EQ(embed->to_f32().size(), 520u * 64u);
}

TEST(Checkpoint, MalformedIndexAndDirectories) {
    TempDir dir;
    expect_error<FormatError>([&] { (void)Checkpoint::open(dir.path()); }, {dir.path().string(), "neither"});
    expect_error<FormatError>([&] { (void)Checkpoint::open(dir / "missing"); }, {"missing", "not a checkpoint directory"});

    write_sharded(kGolden / "mixtral_tiny", dir.path(), 2);
    const auto index_path = dir / "model.safetensors.index.json";
    const Json good = read_json_file(index_path);
    const std::string first = good["weight_map"].begin().key();
    auto with_index = [&](const Json& j, const std::vector<std::string>& fragments) {
        write_bytes(index_path, j.dump());
        auto all = fragments;
        all.push_back("model.safetensors.index.json");
        expect_error<FormatError>([&] { (void)Checkpoint::open(dir.path()); }, all);
    };
    Json j = good;
    j["weight_map"][first] = "../model-00001-of-00002.safetensors";
    with_index(j, {first, "not a plain file name"});
    j = good;
    j["weight_map"][first] = "/etc/passwd";
    with_index(j, {"not a plain file name"});
    j = good;
    j["weight_map"][first] = 12;
    with_index(j, {first, "not a file name"});
    j = good;
    j["weight_map"]["model.not.there"] = "model-00001-of-00002.safetensors";
    with_index(j, {"model.not.there", "does not contain it"});
    j = good;
    j["weight_map"][first] = "model-00009-of-00009.safetensors";
    with_index(j, {"model-00009-of-00009.safetensors", "does not exist"});
    with_index(Json::array(), {"not a JSON object"});
    with_index(Json{{"weight_map", "x"}}, {"weight_map"});
    write_bytes(index_path, "{not json");
    expect_error<FormatError>([&] { (void)Checkpoint::open(dir.path()); }, {"model.safetensors.index.json", "JSON"});

    // The same tensor in two shards.
    const auto f = SafetensorsFile::open(dir / "model-00001-of-00002.safetensors");
    TensorView other = f.tensors()[1];
    other.name = "x";
    write_safetensors(dir / "model-00002-of-00002.safetensors", std::vector<TensorView>{f.tensors()[0], other});
    Json dup = {{"weight_map", {{f.tensors()[0].name, "model-00001-of-00002.safetensors"},
                                {"x", "model-00002-of-00002.safetensors"}}}};
    write_bytes(index_path, dup.dump());
    expect_error<FormatError>([&] { (void)Checkpoint::open(dir.path()); }, {f.tensors()[0].name});

    // A broken shard names the shard file.
    write_bytes(dir / "model-00002-of-00002.safetensors", "junk");
    write_bytes(index_path, good.dump());
    expect_error<FormatError>([&] { (void)Checkpoint::open(dir.path()); }, {"model-00002-of-00002.safetensors"});
}

TEST(WeightBinder, BindsAndReportsEveryProblemAtOnce) {
    TempDir dir;
    const std::vector<float> w(6, 1.0f), b(3, 0.5f);
    const std::vector<std::int64_t> ids = {1, 2};
    std::vector<OwnedTensor> ts;
    ts.push_back(OwnedTensor::f32("layer.weight", {3, 2}, w));
    ts.push_back(OwnedTensor::f32("layer.bias", {3}, b));
    ts.push_back(OwnedTensor::f32("wrong.shape", {2, 3}, w));
    ts.push_back(OwnedTensor::i64("int.tensor", {2}, ids));
    ts.push_back(OwnedTensor::f32("stray.one", {3}, b));
    ts.push_back(OwnedTensor::f32("ignored.buffer", {3}, b));
    write_safetensors(dir / "model.safetensors", ts);

    WeightBinder binder(Checkpoint::open(dir.path()));
    const TensorView lw = binder.require("layer.weight", {3, 2});
    EXPECT_NE(lw.data, nullptr);
    EXPECT_EQ(binder.require("layer.weight", {kAnyDim, 2}).data, lw.data);  // binding twice is fine (tying)
    EXPECT_EQ(binder.require_f32("layer.bias", {3}), b);
    EXPECT_FALSE(binder.optional("absent.optional", {3}).has_value());
    const TensorView missing = binder.require("missing.weight", {4, 4});
    EXPECT_EQ(missing.data, nullptr);
    EXPECT_EQ(binder.require("wrong.shape", {3, 2}).data, nullptr);
    EXPECT_EQ(binder.require_f32("int.tensor", {2}), (std::vector<float>{0.0f, 0.0f}));
    binder.ignore_prefix("ignored.");

    const auto problems = binder.problems();
    EXPECT_EQ(problems.size(), 4u);
    try {
        binder.finish();
        ADD_FAILURE() << "finish() did not throw";
    } catch (const ShapeError& e) {
        const std::string msg = e.what();
        for (const char* frag : {"4 weight problem(s)", "missing tensor 'missing.weight' [4, 4]",
                                 "'wrong.shape': shape [2, 3], expected [3, 2]", "'int.tensor': dtype I64",
                                 "unexpected tensor 'stray.one'", dir.path().c_str()})
            EXPECT_NE(msg.find(frag), std::string::npos) << msg << "\nmissing: " << frag;
        EXPECT_EQ(msg.find("ignored.buffer"), std::string::npos);
    }

    WeightBinder clean(Checkpoint::open(dir.path()));
    for (const TensorView* t : clean.checkpoint().tensors()) clean.mark_used(t->name);
    EXPECT_NO_THROW(clean.finish());
}

TEST(WeightBinder, Bf16WeightsBindAndWiden) {
    WeightBinder binder(Checkpoint::open(kGolden / "olmoe_tiny_bf16"));
    const TensorView e = binder.require("model.embed_tokens.weight", {512, 64});
    EXPECT_EQ(e.dtype, DType::BF16);
    const auto norm = binder.require_f32("model.norm.weight", {64});
    EXPECT_EQ(norm.size(), 64u);
    EXPECT_EQ(norm[0], binder.checkpoint().get("model.norm.weight").to_f32()[0]);
    // Everything else is unexpected; the message is capped but counts all.
    try {
        binder.finish();
        ADD_FAILURE();
    } catch (const ShapeError& ex) {
        EXPECT_NE(std::string(ex.what()).find("and 60 more"), std::string::npos) << ex.what();
    }
}
