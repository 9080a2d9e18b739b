// Validation before use (issue 16): config fields checked for range and consistency, runtime
// options checked in one place, weights checked at load (dtype, NaN/Inf), paths from configs kept
// inside their folder, FIFOs refused, the shared context-length rule, non-finite results named by
// stage. Each case is one a user hit: a SIGFPE, garbage output, or a raw LibTorch message.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>

#include <sys/stat.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "checks.h"
#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"
#include "io/paths.h"
#include "omniflux/io/quantize.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/io/weights.h"
#include "omniflux/models/flux_vae.h"
#include "omniflux/models/qwen2_5_vl.h"
#include "omniflux/models/siglip2.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"
#include "omniflux/sampling/flow_match.h"
#include "omniflux/text/tokenizer.h"
#include "test_util.h"
#include "tiny_tokenizer.h"

namespace fs = std::filesystem;
using namespace omniflux;
using nlohmann::json;

namespace {

// The message of the Error `f` throws; a failure when it throws nothing or something else.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an omniflux::Error: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

#define EXPECT_ERROR_HAS(call, needle)                                              \
  do {                                                                              \
    const std::string msg_ = error_of([&] { (void)(call); });                       \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message: " << msg_;         \
  } while (0)

json read_json(const fs::path& p) {
  json j;
  std::ifstream(p) >> j;
  return j;
}

void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(1); }

// A copy of a fixture folder whose config.json is edited by `edit`.
fs::path edited_copy(const TempDir& d, const std::string& fixture_dir, const std::string& file,
                     const std::function<void(json&)>& edit) {
  for (const auto& e : fs::directory_iterator(fixture(fixture_dir))) fs::copy(e.path(), d.path() / e.path().filename());
  json j = read_json(d.path() / file);
  edit(j);
  write_json(d.path() / file, j);
  return d.path();
}

}  // namespace

// ---- Config accessors ------------------------------------------------------------------------

TEST(ConfigValidation, CheckedAccessorsNameFileAndField) {
  const Config c = Config::parse(R"({"a": 0, "b": -1e-6, "c": 5, "theta": 0, "std": [0.5, 0, 0.5],
                                     "n": {"k": 70000}, "f": 2.5, "big": 1e30})",
                                 "cfg.json");
  EXPECT_ERROR_HAS(c.get_size("a", 3), "cfg.json: a");
  EXPECT_ERROR_HAS(c.get_size("a", 3), "[1, 16777216]");
  EXPECT_EQ(c.get_size("absent", 3), 3);
  EXPECT_EQ(c.get_size("c", 3), 5);
  EXPECT_ERROR_HAS(c.get_epsilon("b", 1e-6), "cfg.json: b");
  EXPECT_ERROR_HAS(c.get_positive("theta", 1e4), "cfg.json: theta");
  EXPECT_ERROR_HAS(c.get_double_list("std", {}, 1e-6, 1e3), "cfg.json: std[1]");
  EXPECT_ERROR_HAS(c.sub("n").get_int("k", 0, 0, 65535), "cfg.json: n.k");
  EXPECT_ERROR_HAS(c.get_double("f", 0.0, -1.0, 1.0), "cfg.json: f");
  EXPECT_ERROR_HAS(c.get_size("big", 1), "cfg.json: big");
  EXPECT_ERROR_HAS(Config::parse(R"({"f": 1e400})", "inf.json"), "inf.json");  // no Inf gets in
  EXPECT_ERROR_HAS(c.check(false, "c", "even", "5"), "inconsistent config (cfg.json: c): expected even, got 5");
}

// The values seen crashing or printing garbage, through the real loaders.
TEST(ConfigValidation, Qwen2_5_VLConfigsAreCheckedBeforeUse) {
  auto expect_load_error = [](const std::function<void(json&)>& edit, const std::string& needle,
                              const std::string& file = "config.json") {
    TempDir d;
    const fs::path dir = edited_copy(d, "qwen2_5_vl", file, edit);
    EXPECT_ERROR_HAS(Qwen2_5_VL::load(dir.string()), needle);
  };
  // Zero patch or merge sizes used to divide by zero (SIGFPE).
  expect_load_error([](json& j) { j["vision_config"]["patch_size"] = 0; }, "config.json: vision_config.patch_size");
  expect_load_error([](json& j) { j["vision_config"]["spatial_merge_size"] = 0; },
                    "config.json: vision_config.spatial_merge_size");
  expect_load_error([](json& j) { j["rms_norm_eps"] = -1e-6; }, "config.json: rms_norm_eps");
  expect_load_error([](json& j) { j["rope_theta"] = 0; }, "config.json: rope_theta");
  expect_load_error([](json& j) { j["rope_theta"] = -10000; }, "config.json: rope_theta");
  expect_load_error([](json& j) { j["head_dim"] = -32; }, "config.json: head_dim");
  expect_load_error([](json& j) { j["vision_config"]["fullatt_block_indexes"] = {1, 4}; },
                    "config.json: vision_config.fullatt_block_indexes[1]");
  expect_load_error([](json& j) { j["num_key_value_heads"] = 3; }, "config.json: num_attention_heads");
  expect_load_error([](json& j) { j["image_token_id"] = 600; }, "config.json: image_token_id");
  expect_load_error([](json& j) { j["image_std"] = {0.5, 0.0, 0.5}; }, "preprocessor_config.json: image_std[1]",
                    "preprocessor_config.json");
  expect_load_error([](json& j) { j["merge_size"] = 0; }, "preprocessor_config.json: merge_size",
                    "preprocessor_config.json");
  expect_load_error([](json& j) { j["patch_size"] = 16; }, "preprocessor_config.json: patch_size",
                    "preprocessor_config.json");  // the tower embeds 14x14 patches
}

TEST(ConfigValidation, VaeSiglipAndSchedulerConfigs) {
  auto vae = [](const std::function<void(json&)>& edit) {
    json j = read_json(fixture("flux_vae/config.json"));
    edit(j);
    return FluxVaeConfig::from_config(Config::parse(j.dump(), "vae/config.json"));
  };
  EXPECT_ERROR_HAS(vae([](json& j) { j["norm_num_groups"] = 0; }), "vae/config.json: norm_num_groups");  // was SIGFPE
  EXPECT_ERROR_HAS(vae([](json& j) { j["scaling_factor"] = 0; }), "vae/config.json: scaling_factor");
  EXPECT_ERROR_HAS(vae([](json& j) { j["norm_num_groups"] = 7; }), "vae/config.json: block_out_channels");
  EXPECT_NO_THROW(vae([](json&) {}));

  json pre = read_json(fixture("siglip2_vision/preprocessor_config.json"));
  pre["image_std"] = {0.5, 0.5, 0.0};
  EXPECT_ERROR_HAS(SiglipImageProcessorConfig::from(Config::parse(pre.dump(), "pre.json")), "pre.json: image_std[2]");
  json vis = read_json(fixture("siglip2_vision/config.json"));
  vis["patch_size"] = 0;
  EXPECT_ERROR_HAS(SiglipVisionConfig::from(Config::parse(vis.dump(), "siglip.json")), "siglip.json: patch_size");

  // A huge shift makes exp(mu) overflow: named, not NaN sigmas.
  EXPECT_ERROR_HAS(flow_match_schedule(4, 1000.0), "scheduler shift out of range");
  EXPECT_EQ(flow_match_schedule(4, 1.0).sigmas.size(0), 5);
}

TEST(ConfigValidation, HugeAddedTokenIdIsRefused) {
  TempDir d;
  write_tiny_tokenizer((d.path() / "tokenizer.json").string(), 300, {{"<|im_start|>", int64_t(1) << 40}});
  EXPECT_ERROR_HAS(text::load_tokenizer(d.path().string()), "added-token id out of range");
}

// ---- runtime options -------------------------------------------------------------------------

TEST(RuntimeValidation, OptionsAreCheckedInOnePlaceBeforeLoading) {
  RuntimeOptions rt;
  EXPECT_NO_THROW(rt.validate());
  rt.dtype = "float16";
  EXPECT_ERROR_HAS(rt.validate(), "float16 is not supported on the CPU (RuntimeOptions::dtype)");
  // A loader says so before mapping anything, instead of a LibTorch kernel error later.
  EXPECT_ERROR_HAS(WeightStore::open(fixture("flux_vae"), rt), "float16 is not supported on the CPU");
  EXPECT_ERROR_HAS(Qwen2_5_VL::load(fixture("qwen2_5_vl"), rt), "float16 is not supported on the CPU");
  rt = {};
  rt.num_threads = 100000;
  EXPECT_ERROR_HAS(rt.validate(), "RuntimeOptions::num_threads");
  EXPECT_ERROR_HAS(set_num_threads(100000), "invalid number of threads");
  rt = {};
  rt.device = "tpu:3";
  EXPECT_ERROR_HAS(rt.validate(), "RuntimeOptions::device");
}

// ---- weights ---------------------------------------------------------------------------------

TEST(WeightValidation, IntegerDtypeForAFloatParameterIsNamed) {
  TempDir d;
  const std::string p = (d.path() / "w.safetensors").string();
  save_safetensors(p, std::map<std::string, at::Tensor>{{"norm.weight", at::ones({4}, at::kInt)},
                                                        {"linear.weight", at::ones({2, 4}, at::kInt)},
                                                        {"ids", at::arange(3, at::kLong)}});
  auto store = WeightStore::open(p);
  EXPECT_ERROR_HAS(store->get("norm.weight", {4}), "w.safetensors: norm.weight");
  EXPECT_ERROR_HAS(store->get("linear.weight", {2, 4}), "stored with an integer dtype");
  EXPECT_ERROR_HAS(store->get("linear.weight", {2, 4}, at::kFloat), "integer dtype");
  // An integer tensor asked for as one is fine.
  EXPECT_TRUE(at::equal(store->get("ids", {3}, at::kLong), at::arange(3, at::kLong)));
}

TEST(WeightValidation, NonFiniteWeightsAreNamedAtLoadUnlessTurnedOff) {
  TempDir d;
  const std::string p = (d.path() / "w.safetensors").string();
  at::Tensor bad = at::randn({8, 8});
  bad[3][5] = NAN;
  at::Tensor inf = at::randn({16});
  inf[0] = INFINITY;
  save_safetensors(p, std::map<std::string, at::Tensor>{{"a.weight", bad}, {"b.bias", inf},
                                                        {"c.weight", at::full({2}, 1e6, at::kFloat)}});
  {
    auto store = WeightStore::open(p);
    EXPECT_ERROR_HAS(store->get("a.weight", {8, 8}), "w.safetensors: a.weight");
    EXPECT_ERROR_HAS(store->get("a.weight", {8, 8}), "1 NaN and 0 Inf of 64");
    EXPECT_ERROR_HAS(store->get("b.bias", {16}), "0 NaN and 1 Inf");
    // Converting overflows too: 1e6 is Inf in float16.
    EXPECT_ERROR_HAS(store->get("c.weight", {2}, at::kHalf), "c.weight");
    EXPECT_NO_THROW(store->get("c.weight", {2}));
  }
  RuntimeOptions rt;
  rt.check_finite_weights = false;
  auto store = WeightStore::open(p, rt);
  EXPECT_TRUE(at::isnan(store->get("a.weight", {8, 8})).any().item<bool>());
}

// ---- paths -----------------------------------------------------------------------------------

TEST(PathValidation, ConfigPathsStayInsideTheFolder) {
  TempDir d;
  const fs::path model = d.path() / "model", outside = d.path() / "elsewhere";
  fs::create_directories(model / "sub");
  fs::create_directories(outside);
  std::ofstream(model / "sub" / "f.bin") << "x";
  std::ofstream(outside / "secret") << "x";
  EXPECT_EQ(resolve_in_folder(model.string(), "sub/f.bin", "cfg: path", false), (model / "sub/f.bin").string());
  EXPECT_ERROR_HAS(resolve_in_folder(model.string(), "/etc/passwd", "cfg: path", false), "leaves the model folder (cfg: path)");
  EXPECT_ERROR_HAS(resolve_in_folder(model.string(), "../elsewhere/secret", "cfg: path", false), "leaves the model folder");
  EXPECT_ERROR_HAS(resolve_in_folder(model.string(), "sub/../../elsewhere/secret", "cfg: path", false), "leaves");
  fs::create_symlink(outside / "secret", model / "link");
  EXPECT_ERROR_HAS(resolve_in_folder(model.string(), "link", "cfg: path", false), "leaves the model folder");
  fs::create_symlink("sub/f.bin", model / "inner");  // a symlink that stays inside is fine
  EXPECT_NO_THROW(resolve_in_folder(model.string(), "inner", "cfg: path", false));
  // allow_outside_paths lets all of them through.
  EXPECT_EQ(resolve_in_folder(model.string(), "/etc/passwd", "cfg: path", true), "/etc/passwd");
  EXPECT_NO_THROW(resolve_in_folder(model.string(), "link", "cfg: path", true));
  // A Hugging Face cache snapshot links its files into the repository's blobs/.
  const fs::path repo = d.path() / "models--org--name", snap = repo / "snapshots" / "abc123";
  fs::create_directories(snap);
  fs::create_directories(repo / "blobs");
  std::ofstream(repo / "blobs" / "deadbeef") << "{}";
  fs::create_symlink("../../blobs/deadbeef", snap / "config.json");
  EXPECT_NO_THROW(resolve_in_folder(snap.string(), "config.json", "cfg", false));
  fs::create_symlink(outside / "secret", snap / "evil.json");
  EXPECT_ERROR_HAS(resolve_in_folder(snap.string(), "evil.json", "cfg", false), "leaves the model folder");
}

TEST(PathValidation, ShardIndexAndTokenizerFilesStayInside) {
  TempDir d;
  const fs::path model = d.path() / "model", outside = d.path() / "elsewhere";
  fs::create_directories(model);
  fs::create_directories(outside);
  save_safetensors((outside / "shard.safetensors").string(), std::map<std::string, at::Tensor>{{"w", at::ones({2})}});
  fs::create_symlink(outside / "shard.safetensors", model / "model-00001.safetensors");
  write_json(model / "model.safetensors.index.json", {{"weight_map", {{"w", "model-00001.safetensors"}}}});
  EXPECT_ERROR_HAS(Checkpoint::open(model.string()), "weight_map.w");
  EXPECT_NO_THROW(Checkpoint::open(model.string(), /*allow_outside_paths=*/true));
  RuntimeOptions rt;
  rt.allow_outside_paths = true;
  EXPECT_NO_THROW(WeightStore::open(model.string(), rt));
  write_json(model / "model.safetensors.index.json", {{"weight_map", {{"w", "../elsewhere/shard.safetensors"}}}});
  EXPECT_ERROR_HAS(Checkpoint::open(model.string()), "relative to the index folder");

  const fs::path tok = d.path() / "tok";
  fs::create_directories(tok);
  write_tiny_tokenizer((outside / "tokenizer.json").string(), 300, {});
  fs::create_symlink(outside / "tokenizer.json", tok / "tokenizer.json");
  EXPECT_ERROR_HAS(text::check_tokenizer_folder(tok.string()), "leaves the model folder");
  EXPECT_NO_THROW(text::check_tokenizer_folder(tok.string(), /*allow_outside_paths=*/true));
  EXPECT_NO_THROW(text::load_tokenizer(tok.string()));  // a path the caller names is the caller's choice

  // A model folder's tokenizer, through a model loader.
  const fs::path vl = d.path() / "vl";
  fs::create_directories(vl);
  for (const auto& e : fs::directory_iterator(fixture("qwen2_5_vl"))) fs::copy(e.path(), vl / e.path().filename());
  write_tiny_tokenizer((outside / "vl_tokenizer.json").string(), 590,
                       {{"<|vision_start|>", 590}, {"<|image_pad|>", 593}, {"<|im_start|>", 595}, {"<|im_end|>", 596}});
  fs::create_symlink(outside / "vl_tokenizer.json", vl / "tokenizer.json");
  EXPECT_ERROR_HAS(Qwen2_5_VL::load(vl.string()), "vl/tokenizer.json");
  EXPECT_NO_THROW(Qwen2_5_VL::load(vl.string(), rt));  // allow_outside_paths
}

TEST(PathValidation, FifosAreRefusedBeforeReading) {
  TempDir d;
  const fs::path fifo = d.path() / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Each of these would block forever in open() or read() on a FIFO with no writer.
  EXPECT_ERROR_HAS(load_image(fifo.string()), "a FIFO");
  EXPECT_ERROR_HAS(SafetensorsFile::open(fifo.string()), "a FIFO");
  EXPECT_ERROR_HAS(Config::load(fifo.string()), "a FIFO");
  const fs::path tok = d.path() / "tok";
  fs::create_directories(tok);
  ASSERT_EQ(::mkfifo((tok / "tokenizer.json").c_str(), 0600), 0);
  EXPECT_ERROR_HAS(text::load_tokenizer(tok.string()), "a FIFO");
  EXPECT_ERROR_HAS(load_image("/dev/zero"), "a device");
  EXPECT_ERROR_HAS(load_image(d.path().string()), "a folder");
}

// require_folder / require_file name what was wanted and the path, and the loaders use them.
TEST(PathValidation, ModelFolderChecksNameThePath) {
  TempDir d;
  const fs::path missing = d.path() / "absent", file = d.path() / "f.txt";
  std::ofstream(file) << "x";
  EXPECT_NO_THROW(require_folder(d.path().string(), "X-Omni"));
  EXPECT_ERROR_HAS(require_folder(missing.string(), "X-Omni"), "X-Omni folder not found (" + missing.string() + ")");
  EXPECT_ERROR_HAS(require_folder(file.string(), "X-Omni"),
                   "X-Omni is not a folder (" + file.string() + "): expected a folder, got a file");
  EXPECT_EQ(require_file(d.path().string(), "f.txt", "FLUX.1-dev"), file.string());
  const fs::path index = d.path() / "model_index.json";
  EXPECT_ERROR_HAS(require_file(d.path().string(), "model_index.json", "FLUX.1-dev"),
                   "the FLUX.1-dev folder lacks model_index.json (" + index.string() + ")");
  fs::create_directories(index);
  EXPECT_ERROR_HAS(require_file(d.path().string(), "model_index.json", "FLUX.1-dev"),
                   "model_index.json is not a regular file (" + index.string() + "): expected a regular file, got a folder");
  EXPECT_ERROR_HAS(FluxPipeline::load(d.path().string()), "the FLUX.1-dev folder's model_index.json");
  EXPECT_ERROR_HAS(XOmniPipeline::load(missing.string(), ""), "X-Omni folder not found (" + missing.string());
  EXPECT_ERROR_HAS(UniWorldPipeline::load(missing.string(), d.path().string(), d.path().string()),
                   "UniWorld-V1 folder not found (" + missing.string());
  EXPECT_ERROR_HAS(quantize_folder(file.string(), (d.path() / "out").string(), QuantizeOptions{}),
                   "source is not a folder (" + file.string());
}

// ---- shared checks ---------------------------------------------------------------------------

TEST(SharedChecks, ContextLengthAndProductsDoNotOverflow) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_NO_THROW(check_context_length(100, 28, 128, "here"));
  EXPECT_ERROR_HAS(check_context_length(100, 29, 128, "here"), "prompt plus new tokens exceed the model's context (here)");
  EXPECT_ERROR_HAS(check_context_length(100, 29, 128, "here"), "at most 28 new tokens");
  EXPECT_ERROR_HAS(check_context_length(129, 0, 128, "here"), "prompt longer than the model's context");
  EXPECT_ERROR_HAS(check_context_length(100, kMax, 128, "here"), "exceed");  // 100 + max would wrap
  EXPECT_ERROR_HAS(check_context_length(kMax, kMax, kMax, "here"), "exceed");
  EXPECT_ERROR_HAS(check_context_length(5, -1, 128, "here"), "negative number of new tokens");
  EXPECT_EQ(checked_product(4096, 4096, int64_t(1) << 24, "rows x cols"), 4096 * 4096);
  EXPECT_ERROR_HAS(checked_product(int64_t(1) << 40, int64_t(1) << 40, int64_t(1) << 24, "rows x cols"), "rows x cols");
  EXPECT_ERROR_HAS(check_guidance(1e300, "guidance"), "guidance scale out of range (guidance)");
  EXPECT_ERROR_HAS(check_guidance(NAN, "guidance"), "guidance scale out of range");
  EXPECT_NO_THROW(check_guidance(3.5, "guidance"));
  EXPECT_ERROR_HAS(check_finite(at::tensor({1.f, NAN, INFINITY}), "VAE decode"), "non-finite values (VAE decode)");
  EXPECT_NO_THROW(check_finite(at::ones({3}), "VAE decode"));
}

// The Qwen2.5-VL entry points apply the rule before allocating: max_new_tokens of 1e9 used to be
// a LibTorch allocator failure.
TEST(SharedChecks, Qwen2_5_VLAnswerChecksTheContextFirst) {
  TempDir d;
  for (const auto& e : fs::directory_iterator(fixture("qwen2_5_vl"))) fs::copy(e.path(), d.path() / e.path().filename());
  write_tiny_tokenizer((d.path() / "tokenizer.json").string(), 590,
                       {{"<|vision_start|>", 590}, {"<|vision_end|>", 591}, {"<|vision_pad|>", 592},
                        {"<|image_pad|>", 593}, {"<|video_pad|>", 594}, {"<|im_start|>", 595},
                        {"<|im_end|>", 596}, {"<|endoftext|>", 597}});
  auto m = Qwen2_5_VL::load(d.path().string());
  Qwen2_5_VL::AnswerOptions o;
  o.max_new_tokens = 1000000000;
  EXPECT_ERROR_HAS(m.answer({}, "Hi?", o), "Qwen2.5-VL answer");
  EXPECT_ERROR_HAS(m.answer({}, "Hi?", o), "max_position_embeddings = 32768");
  auto p = m.build_prompt({}, "Hi?");
  sampling::TokenLoopOptions g;
  g.max_new_tokens = 1000000000;
  EXPECT_ERROR_HAS(m.generate(p.ids, {}, {}, g), "Qwen2.5-VL generate");
}

// The reference parser (serde_json::from_str) accepts JSON whitespace after the header object and
// rejects anything else; NUL padding is in the malformed corpus (header_nul_padded).
TEST(SafetensorsHeader, WhitespacePaddingIsAcceptedNulIsNot) {
  const std::string data(8, '\0');  // two F32 zeros
  auto file = [&](const std::string& header) {
    std::string b(8, '\0');
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    return b + header + data;
  };
  const std::string json = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  for (const std::string pad : {"   ", "\t\n\r ", "\n"}) {
    const std::string b = file(json + pad);
    SafetensorsFile f = SafetensorsFile::from_buffer(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "mem");
    EXPECT_EQ(f.info("a").shape, std::vector<int64_t>{2});
  }
  for (const std::string pad : {std::string(3, '\0'), std::string(" \0", 2), std::string("x")}) {
    const std::string b = file(json + pad);
    EXPECT_THROW(SafetensorsFile::from_buffer(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "mem"), Error);
  }
}

// ---- non-finite results ----------------------------------------------------------------------

namespace {
const fs::path& tiny_flux() {
  static TempDir dir;
  static bool written = [] {
    const std::string cmd = bin("omniflux-tiny") + " --out " + dir.path().string() + " --seed 3 --only flux_1_dev --tokenizers " +
                            fixture("tokenizers") + " > /dev/null";
    return std::system(cmd.c_str()) == 0;
  }();
  EXPECT_TRUE(written);
  return dir.path();
}

// A copy of the tiny FLUX.1-dev folder (weights as symlinks) whose file `rel` has `edit` applied to one tensor.
fs::path flux_with(const TempDir& d, const std::string& rel, const std::string& tensor,
                   const std::function<void(at::Tensor&)>& edit) {
  const fs::path src = tiny_flux() / "flux.1-dev", dst = d.path() / "flux.1-dev";
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    const fs::path r = fs::relative(e.path(), src);
    if (e.is_directory()) fs::create_directories(dst / r);
    else if (r == rel) continue;
    else if (e.path().extension() == ".safetensors") fs::create_symlink(e.path(), dst / r);  // big, never edited
    else fs::copy_file(e.path(), dst / r);  // tokenizer files must stay inside the folder
  }
  SafetensorsFile f = SafetensorsFile::open((src / rel).string());
  std::map<std::string, at::Tensor> t;
  for (const auto& i : f.tensors()) t[i.name] = f.get(i.name).clone();
  edit(t.at(tensor));
  save_safetensors((dst / rel).string(), t);
  return dst;
}
}  // namespace

// A NaN weight that gets past the load check (turned off) is caught where it surfaces: the run
// names the stage instead of saving a black PNG.
TEST(NonFiniteResults, NamedByStageNotABlackImage) {
  TempDir d;
  const fs::path dir = flux_with(d, "vae/diffusion_pytorch_model.safetensors", "decoder.conv_out.bias",
                                 [](at::Tensor& t) { t[0] = NAN; });
  FluxOptions o;
  o.prompt = "a cat";
  o.width = o.height = 32;
  o.steps = 1;
  EXPECT_ERROR_HAS(FluxPipeline::load(dir.string()), "decoder.conv_out.bias");  // the load check, on by default
  RuntimeOptions rt;
  rt.check_finite_weights = false;
  auto p = FluxPipeline::load(dir.string(), rt);
  EXPECT_ERROR_HAS(p.generate(o), "non-finite values (VAE decode: pixels)");
  TempDir d2;
  const fs::path dit = flux_with(d2, "transformer/diffusion_pytorch_model.safetensors", "proj_out.bias",
                                 [](at::Tensor& t) { t[1] = INFINITY; });
  EXPECT_ERROR_HAS(FluxPipeline::load(dit.string(), rt).generate(o), "FLUX denoising");
  // guidance of 1e300 would be Inf in float32
  o.guidance = 1e300;
  EXPECT_ERROR_HAS(FluxPipeline::load((tiny_flux() / "flux.1-dev").string()).generate(o), "guidance");
}

// X-Omni names its ViT, projector and decoder folder in vision_config: they stay in the folder.
TEST(PathValidation, XOmniVisionConfigPaths) {
  static TempDir tiny;
  const std::string cmd = bin("omniflux-tiny") + " --out " + tiny.path().string() + " --seed 2 --only x_omni --tokenizers " +
                          fixture("tokenizers") + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const fs::path src = tiny.path() / "x-omni";
  TempDir d;
  const fs::path dir = d.path() / "x-omni", outside = d.path() / "elsewhere";
  fs::create_directories(outside);
  fs::copy(src, dir, fs::copy_options::recursive);
  const json original = read_json(dir / "config.json");
  auto with = [&](const std::function<void(json&)>& edit) {
    json j = original;
    edit(j);
    write_json(dir / "config.json", j);
  };
  with([](json& j) { j["vision_config"]["encoder"]["siglip_path"] = "../elsewhere/vit.safetensors"; });
  EXPECT_ERROR_HAS(XOmniPipeline::load(dir.string(), ""), "vision_config.encoder.siglip_path");
  with([](json& j) { j["vision_config"]["encoder"]["projector_path"] = "/etc/passwd"; });
  EXPECT_ERROR_HAS(XOmniPipeline::load(dir.string(), ""), "leaves the model folder");
  with([](json& j) { j["vision_config"]["decoder"]["model_path"] = "../../"; });
  EXPECT_ERROR_HAS(XOmniPipeline::load(dir.string(), (tiny.path() / "flux.1-dev").string()),
                   "vision_config.decoder.model_path");
  // through a symlink that leaves the folder
  const std::string vit = original["vision_config"]["encoder"]["siglip_path"].get<std::string>();
  fs::rename(dir / vit, outside / "vit.safetensors");
  fs::create_symlink(outside / "vit.safetensors", dir / vit);
  with([](json&) {});
  EXPECT_ERROR_HAS(XOmniPipeline::load(dir.string(), ""), "vision_config.encoder.siglip_path");
  RuntimeOptions rt;
  rt.allow_outside_paths = true;
  EXPECT_NO_THROW(XOmniPipeline::load(dir.string(), "", rt));
}

// The same rule at every entry point, before the work: X-Omni chat used to accept a prompt longer
// than max_position_embeddings and generate past it, while generate checked.
TEST(SharedChecks, EveryEntryPointChecksTheContext) {
  static TempDir tiny;
  const std::string cmd = bin("omniflux-tiny") + " --out " + tiny.path().string() +
                          " --seed 2 --only x_omni --only uniworld_v1 --only flux_1_dev --only siglip2 --tokenizers " +
                          fixture("tokenizers") + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto xo = XOmniPipeline::load((tiny.path() / "x-omni").string(), "");
  const int64_t max_pos = xo.lm().config().text.max_position_embeddings;  // 4096 in the tiny folder
  std::string long_question;
  for (int64_t i = 0; i < max_pos; ++i) long_question += " a";
  Image img{64, 64, std::vector<uint8_t>(64 * 64 * 3, 100)};
  EXPECT_ERROR_HAS(xo.chat(img, long_question, {}, 4), "prompt longer than the model's context (X-Omni chat)");
  EXPECT_ERROR_HAS(xo.chat(img, "Hi?", {}, 1000000000), "prompt plus new tokens exceed the model's context (X-Omni chat)");
  EXPECT_ERROR_HAS(xo.t2i_prompt(long_question, 64, 64), "X-Omni generate");

  auto uw = UniWorldPipeline::load((tiny.path() / "uniworld-v1").string(), (tiny.path() / "flux.1-dev").string(),
                                   (tiny.path() / "siglip2").string());
  UniWorldOptions o;
  o.prompt = "What is this?";
  o.width = o.height = 32;
  o.steps = 1;
  o.task = UniWorldTask::Text;
  o.max_new_tokens = int64_t(1) << 40;
  EXPECT_ERROR_HAS(uw.run(o), "UniWorld text answer");
  o.task = UniWorldTask::Image;  // no text answer possible: the budget is not needed
  EXPECT_NO_THROW(uw.run(o));
  o.guidance = 1e300;
  EXPECT_ERROR_HAS(uw.run(o), "UniWorldPipeline: guidance");
}
