// UniWorld-V1: the torch.save reader, the connectors and text-stream assembly, the output-size
// rule, the task head, and the pipeline end to end on tiny folders written by omniflux-tiny
// (text-to-image, editing with 1-4 images, perception prompts, text answers, routing) through the
// library and the omniflux-uniworld CLI, with the bad inputs.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <iterator>
#include <string>

#include <sys/stat.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/safetensors.h"
#include "io/torch_pickle.h"
#include "omniflux/models/uniworld_connectors.h"
#include "omniflux/pipelines/uniworld.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace omniflux;
using namespace std::string_literals;

namespace {

using HW = std::pair<int64_t, int64_t>;

std::string bin_unicode(const std::string& s) {
  std::string r = "X";
  for (int i = 0; i < 4; ++i) r.push_back(static_cast<char>((s.size() >> (8 * i)) & 0xFF));
  return r + s;
}

// The pickle CPython 3 writes for torch.save(sd) of a state dict {'w': 2x2 float32 on storage
// '0', 'v': a [2] view of the same storage at offset 2} with its _metadata (protocol 2, memo
// BINPUT/BINGET as pickle.py emits them).
std::string python_state_dict_pickle() {
  std::string p = "\x80\x02"s + "ccollections\nOrderedDict\nq\x00)Rq\x01("s;
  p += bin_unicode("w"s) + "q\x02"s + "ctorch._utils\n_rebuild_tensor_v2\nq\x03(("s
       + bin_unicode("storage"s) + "q\x04"s + "ctorch\nFloatStorage\nq\x05"s + bin_unicode("0"s) + "q\x06"s +
       bin_unicode("cpu"s) + "q\x07K\x04tq\x08QK\x00K\x02K\x02\x86q\tK\x02K\x01\x86q\n\x89h\x00)Rq\x0btq\x0cRq\r"s;
  p += bin_unicode("v"s) + "q\x0eh\x03((h\x04h\x05h\x06h\x07K\x04tq\x0fQK\x02K\x02\x85q\x10K\x01\x85q\x11\x89h\x00)Rq\x12tq\x13Rq\x14u"s;
  p += "}q\x15"s + bin_unicode("_metadata"s) + "q\x16h\x00)Rq\x17"s + bin_unicode(""s) + "q\x18}q\x19"s +
       bin_unicode("version"s) + "q\x1aK\x01sssb."s;
  // (std::string literals: the memo index 0 is a NUL byte.)
  return p;
}

std::string float_bytes(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.begin(), s.size());
  return s;
}

}  // namespace

// ---- torch.save files ---------------------------------------------------------------------------

TEST(TorchPickle, ReadsWhatPythonTorchSaveWrites) {
  TempDir d;
  const std::string pkl = python_state_dict_pickle();
  write_bytes(d.path() / "sd.pt", make_zip({{"sd/data.pkl", pkl},
                                             {"sd/byteorder", "little"},
                                             {"sd/data/0", float_bytes({1, 2, 3, 4})},
                                             {"sd/version", "3\n"}}));
  auto sd = load_torch_state_dict((d.path() / "sd.pt").string());
  ASSERT_EQ(sd.size(), 2u);
  EXPECT_TRUE(at::equal(sd.at("w"), at::tensor({1.f, 2.f, 3.f, 4.f}).reshape({2, 2})));
  EXPECT_TRUE(at::equal(sd.at("v"), at::tensor({3.f, 4.f})));
}

TEST(TorchPickle, RoundTripsItsOwnFiles) {
  TempDir d;
  std::map<std::string, at::Tensor> in = {{"0.weight", at::randn({5, 3})},
                                          {"0.bias", at::randn({5}).to(at::kBFloat16)},
                                          {"ids", at::arange(7, at::kLong)},
                                          {"t", at::randn({4, 6}).t()}};  // non-contiguous
  save_torch_state_dict((d.path() / "x.pt").string(), in);
  auto out = load_torch_state_dict((d.path() / "x.pt").string());
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [k, v] : in) {
    EXPECT_EQ(out.at(k).scalar_type(), v.scalar_type()) << k;
    EXPECT_TRUE(at::equal(out.at(k), v)) << k;
  }
}

TEST(TorchPickle, RejectsWhatItCannotRead) {
  TempDir d;
  auto expect_error = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    write_bytes(d.path() / name, bytes);
    try {
      load_torch_state_dict((d.path() / name).string());
      ADD_FAILURE() << name << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << name << ": " << e.what();
    }
  };
  expect_error("legacy.pt", std::string("\x80\x02\x8a\x0alz\xe8", 7) + "junk", "not a torch.save zip");
  const std::string pkl = python_state_dict_pickle();
  const std::string data = float_bytes({1, 2, 3, 4});
  expect_error("deflated.pt", make_zip({{"a/data.pkl", pkl}, {"a/data/0", data}}, 8), "compressed");
  expect_error("nostorage.pt", make_zip({{"a/data.pkl", pkl}}), "storage record missing");
  expect_error("short.pt", make_zip({{"a/data.pkl", pkl}, {"a/data/0", data.substr(0, 8)}}), "wrong size");
  expect_error("bigendian.pt", make_zip({{"a/data.pkl", pkl}, {"a/byteorder", "big"}, {"a/data/0", data}}),
               "byte order");
  // A list of tensors is not a state dict; an arbitrary class is not unpickled.
  expect_error("list.pt", make_zip({{"a/data.pkl", std::string("\x80\x02]q\x00.", 6)}}), "does not hold a dict");
  expect_error("class.pt", make_zip({{"a/data.pkl", std::string("\x80\x02", 2) + "cos\nsystem\n" + bin_unicode("ls") + "\x85R."}}),
               "unsupported object os.system");
  expect_error("trunc.pt", make_zip({{"a/data.pkl", pkl.substr(0, 40)}}), "cannot read the torch pickle");
  EXPECT_THROW(load_torch_state_dict((d.path() / "absent.pt").string()), Error);
  // One flipped byte in the tensor data: the CRC-32 catches it.
  std::string good = make_zip({{"a/data.pkl", pkl}, {"a/data/0", data}});
  const size_t at_data = good.find(data);
  ASSERT_NE(at_data, std::string::npos);
  good[at_data + 5] ^= 0x10;
  expect_error("flipped.pt", good, "CRC-32");
}

// Hostile views: every size, stride and offset is checked against the storage before a tensor is
// built (a short stride tuple was read past its end before; overflowing strides wrapped).
TEST(TorchPickle, RefusesViewsOutsideOrLargerThanTheirStorage) {
  TempDir d;
  const std::string big = "\x8a\x08"s + std::string(7, '\xff') + "\x3f"s;  // LONG1 2^62-ish
  auto one_tensor = [&](const std::string& offset, const std::string& size, const std::string& stride) {
    const std::string pkl = "\x80\x02}("s + bin_unicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n(("s +
                            bin_unicode("storage") + "ctorch\nFloatStorage\n"s + bin_unicode("0") + bin_unicode("cpu") +
                            "K\x04tQ"s + offset + size + stride + "\x89"s + "ccollections\nOrderedDict\n)RtRu."s;
    return make_zip({{"a/data.pkl", pkl}, {"a/data/0", float_bytes({1, 2, 3, 4})}});
  };
  write_bytes(d.path() / "ok.pt", one_tensor("K\x00"s, "(K\x02K\x02t"s, "(K\x01K\x02t"s));
  EXPECT_TRUE(at::equal(load_torch_state_dict((d.path() / "ok.pt").string()).at("w"),
                        at::tensor({1.f, 3.f, 2.f, 4.f}).reshape({2, 2})));
  const std::vector<std::pair<std::string, std::string>> bad = {
      {one_tensor("K\x00"s, "(K\x02K\x02t"s, "(K\x02t"s), "sizes and strides of different lengths"},
      {one_tensor("K\x00"s, "(K\x02K\x02t"s, "("s + big + "K\x01t"s), "outside its storage"},
      {one_tensor("K\x03"s, "(K\x02t"s, "(K\x01t"s), "outside its storage"},
      {one_tensor("\x8a\x01\xff"s, "(K\x01t"s, "(K\x01t"s), "negative storage offset"},
      {one_tensor("K\x00"s, "(M\xe8\x03t"s, "(K\x00t"s), "more elements than its storage"},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    const fs::path f = d.path() / ("bad" + std::to_string(i) + ".pt");
    write_bytes(f, bad[i].first);
    try {
      load_torch_state_dict(f.string());
      ADD_FAILURE() << "case " << i << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad[i].second), std::string::npos) << "case " << i << ": " << e.what();
    }
  }
}

TEST(TorchPickle, CatchesAFlippedByteInItsOwnFilesAndRefusesAFifo) {
  TempDir d;
  const fs::path p = d.path() / "head.pt";
  save_torch_state_dict(p.string(), {{"w", at::arange(64, at::kFloat)}});
  std::string bytes = read_bytes(p);
  // The float 63.0 is stored last in the data entry; flip a bit of it.
  float v = 63.f;
  const size_t at = bytes.find(std::string(reinterpret_cast<const char*>(&v), 4));
  ASSERT_NE(at, std::string::npos);
  bytes[at] ^= 0x01;
  write_bytes(p, bytes);
  try {
    load_torch_state_dict(p.string());
    ADD_FAILURE() << "a corrupt .pt was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CRC-32"), std::string::npos) << e.what();
  }
  const fs::path fifo = d.path() / "fifo.pt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  try {
    load_torch_state_dict(fifo.string());  // must not block waiting for a writer
    ADD_FAILURE() << "a FIFO was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a FIFO"), std::string::npos) << e.what();
  }
}

// ---- connectors -------------------------------------------------------------------------------

TEST(UniWorldConnectors, SigLipRowsGoBeforeEachVisionEndAndT5Last) {
  const int64_t END = 151653;
  at::Tensor ids = at::tensor(std::vector<int64_t>{7, END, 8, 9, END, 5}, at::kLong).reshape({1, 6});
  at::Tensor vlm = at::arange(6, at::kFloat).reshape({1, 6, 1}).expand({1, 6, 2}).contiguous();
  at::Tensor sig = (100 + at::arange(4, at::kFloat)).reshape({2, 2, 1}).expand({2, 2, 2}).contiguous();
  at::Tensor t5 = at::full({1, 1, 2}, -1.f);
  auto ts = uniworld_assemble_text_stream(ids, vlm, sig, t5, END);
  // rows: v0 | s0 s1 | v1 v2 v3 | s2 s3 | v4 v5 | t5
  const std::vector<float> want = {0, 100, 101, 1, 2, 3, 102, 103, 4, 5, -1};
  ASSERT_EQ(ts.prompt_embeds.sizes(), at::IntArrayRef({1, 11, 2}));
  for (size_t r = 0; r < want.size(); ++r) EXPECT_EQ(ts.prompt_embeds[0][r][1].item<float>(), want[r]) << r;
  EXPECT_TRUE(at::equal(ts.vision_end_positions, at::tensor({1, 4}, at::kLong)));
  EXPECT_TRUE(at::equal(ts.txt_ids, at::zeros({11, 3})));
  EXPECT_EQ(ts.row_source[1][0].item<int64_t>(), 1);
  EXPECT_EQ(ts.row_source[10][0].item<int64_t>(), 2);
  // without images and without T5: the projected VLM rows alone
  auto plain = uniworld_assemble_text_stream(at::tensor({1, 2, 3}, at::kLong).reshape({1, 3}),
                                              vlm.slice(1, 0, 3), at::Tensor(), at::Tensor(), END);
  EXPECT_TRUE(at::equal(plain.prompt_embeds, vlm.slice(1, 0, 3)));
  // one image for two <|vision_end|> tokens
  EXPECT_THROW(uniworld_assemble_text_stream(ids, vlm, sig.slice(0, 0, 1), t5, END), Error);
  EXPECT_THROW(uniworld_assemble_text_stream(ids, vlm, at::Tensor(), t5, END), Error);
  EXPECT_THROW(uniworld_assemble_text_stream(ids, vlm.slice(1, 0, 5), sig, t5, END), Error);
  EXPECT_THROW(uniworld_assemble_text_stream(ids, vlm, sig, at::zeros({1, 1, 3}), END), Error);
}

TEST(UniWorldConnectors, OutputSizeFollowsTheAspectRatioTable) {
  // docs/models/uniworld.md §3.7, anchor 1024^2: (H, W)
  const int64_t A = 1024 * 1024;
  EXPECT_EQ(uniworld_dynamic_resize(1000, 1000, A), HW(1024, 1024));
  EXPECT_EQ(uniworld_dynamic_resize(768, 1024, A), HW(864, 1152));   // 4:3
  EXPECT_EQ(uniworld_dynamic_resize(1024, 768, A), HW(1152, 864));   // 3:4
  EXPECT_EQ(uniworld_dynamic_resize(1080, 1920, A), HW(864, 1536));  // 16:9
  EXPECT_EQ(uniworld_dynamic_resize(1920, 1080, A), HW(1536, 864));  // 9:16
  EXPECT_EQ(uniworld_dynamic_resize(400, 600, A), HW(832, 1248));    // 3:2
  EXPECT_EQ(uniworld_dynamic_resize(800, 1000, A), HW(896, 1120));   // 5:4
  EXPECT_EQ(uniworld_dynamic_resize(500, 700, A), HW(800, 1120));    // 7:5
  EXPECT_EQ(uniworld_dynamic_resize(768, 1024, 256 * 256), HW(192, 256));
  EXPECT_THROW(uniworld_dynamic_resize(0, 10, A), Error);
}

TEST(UniWorldConnectors, TaskHeadFromTorchSaveAndSafetensors) {
  TempDir d;
  std::map<std::string, at::Tensor> sd = {{"0.weight", at::randn({6, 4})}, {"0.bias", at::randn({6})},
                                          {"3.weight", at::randn({2, 6})}, {"3.bias", at::randn({2})}};
  save_torch_state_dict((d.path() / "task_head_final.pt").string(), sd);
  save_safetensors((d.path() / "task_head_final.safetensors").string(), sd);
  at::Tensor h = at::randn({4});
  at::Tensor want = at::matmul(sd["3.weight"], at::silu(at::matmul(sd["0.weight"], h) + sd["0.bias"])) + sd["3.bias"];
  for (const char* f : {"task_head_final.pt", "task_head_final.safetensors"}) {
    auto head = UniWorldTaskHead::load((d.path() / f).string(), 4);
    EXPECT_TRUE(at::allclose(head.forward(h), want, 1e-5, 1e-6)) << f;
    EXPECT_EQ(head.wants_image(h), want[0].item<float>() < want[1].item<float>());
  }
  EXPECT_THROW(UniWorldTaskHead::load((d.path() / "task_head_final.pt").string(), 5), Error);  // hidden 4
  auto missing = sd;
  missing.erase("3.bias");
  save_torch_state_dict((d.path() / "missing.pt").string(), missing);
  EXPECT_THROW(UniWorldTaskHead::load((d.path() / "missing.pt").string(), 4), Error);
  auto extra = sd;
  extra["5.weight"] = at::zeros({1});
  save_torch_state_dict((d.path() / "extra.pt").string(), extra);
  EXPECT_THROW(UniWorldTaskHead::load((d.path() / "extra.pt").string(), 4), Error);
  EXPECT_THROW(UniWorldTaskHead::load((d.path() / "absent.pt").string(), 4), Error);
}

// ---- end to end on tiny folders -----------------------------------------------------------------

namespace {

const fs::path& tiny_root() { return tiny_folders(5, {"flux_1_dev", "uniworld_v1", "siglip2"}); }

const UniWorldPipeline& tiny_pipeline() {
  static UniWorldPipeline p = UniWorldPipeline::load((tiny_root() / "uniworld-v1").string(),
                                                     (tiny_root() / "flux.1-dev").string(),
                                                     (tiny_root() / "siglip2").string());
  return p;
}

UniWorldOptions small(const std::string& prompt, std::vector<Image> images = {}) {
  UniWorldOptions o;
  o.prompt = prompt;
  o.images = std::move(images);
  o.width = o.height = 64;
  o.steps = 2;
  o.seed = 7;
  o.task = UniWorldTask::Image;
  return o;
}

// stderr goes to a file of this call's own: a fixed name ("/dev/null.err", as it once was) is shared by
// tests that ctest -j runs at the same time, and one test then read the other's messages.
std::string run_cli(const std::string& args, int* rc, const fs::path& stdout_file = {}) {
  const fs::path d = tiny_root();
  TempDir err_dir;
  const std::string out = stdout_file.empty() ? "/dev/null" : stdout_file.string();
  const std::string err = (err_dir.path() / "stderr.txt").string();
  // The library's thread count, as the CLI's results are compared with the library's: a reduction
  // split over another number of threads may round differently.
  const std::string cmd = bin("omniflux-uniworld") + " --model " + (d / "uniworld-v1").string() + " --flux " +
                          (d / "flux.1-dev").string() + " --siglip " + (d / "siglip2").string() + " --threads " +
                          std::to_string(at::get_num_threads()) + " " + args + " > " + out + " 2> " + err;
  *rc = WEXITSTATUS(std::system(cmd.c_str()));
  return read_bytes(err);
}

}  // namespace

TEST(UniWorldEndToEnd, TinyFoldersHaveTheReleaseLayout) {
  const fs::path d = tiny_root();
  for (const char* f : {"uniworld-v1/config.json", "uniworld-v1/model.safetensors", "uniworld-v1/tokenizer.json",
                        "uniworld-v1/preprocessor_config.json", "uniworld-v1/task_head_final.pt",
                        "siglip2/config.json", "siglip2/model.safetensors", "siglip2/preprocessor_config.json",
                        "flux.1-dev/model_index.json", "flux.1-dev/vae/config.json"})
    EXPECT_TRUE(fs::is_regular_file(d / f)) << f;
  auto ck = Checkpoint::open((d / "uniworld-v1").string());
  for (const char* k : {"model.embed_tokens.weight", "visual.patch_embed.proj.weight", "lm_head.weight",
                        "denoise_tower.denoiser.x_embedder.weight", "denoise_tower.denoise_projector.0.weight",
                        "denoise_tower.siglip_projector.2.bias", "denoise_tower.vae_projector.0.weight"})
    EXPECT_TRUE(ck.contains(k)) << k;
  EXPECT_EQ(read_bytes(d / "uniworld-v1/tokenizer.json"), read_bytes(fixture("tokenizers/qwen2/tokenizer.json")));
  EXPECT_TRUE(tiny_pipeline().has_task_head());
}

TEST(UniWorldEndToEnd, TextToImageIsReproducible) {
  const auto& p = tiny_pipeline();
  auto a = p.run(small("A red fox in the snow"));
  auto b = p.run(small("A red fox in the snow"));
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(std::holds_alternative<Image>(*a));
  EXPECT_EQ(std::get<Image>(*a).width, 64);
  EXPECT_EQ(std::get<Image>(*a).height, 64);
  EXPECT_EQ(std::get<Image>(*a).rgb, std::get<Image>(*b).rgb);
  auto o = small("A red fox in the snow");
  o.seed = 8;
  EXPECT_NE(std::get<Image>(*p.run(o)).rgb, std::get<Image>(*a).rgb);
  o.seed = 7;
  o.use_t5 = false;  // CLIP("") and no T5 rows: another image
  EXPECT_NE(std::get<Image>(*p.run(o)).rgb, std::get<Image>(*a).rgb);
}

TEST(UniWorldEndToEnd, EditingWithOneToFourImages) {
  const auto& p = tiny_pipeline();
  std::vector<Image> refs = {gradient_image(40, 30, 0), gradient_image(30, 40, 9), gradient_image(32, 32, 17), gradient_image(50, 20, 33)};
  std::vector<int64_t> rows;
  for (size_t n = 1; n <= 4; ++n) {
    auto o = small("Adapt Image1's content to fit the aesthetic of Image2.",
                   std::vector<Image>(refs.begin(), refs.begin() + static_cast<long>(n)));
    o.snap_to_ratio = false;
    auto vp = p.build_prompt(o.prompt, o.images);
    EXPECT_EQ(vp.pixels.grid_thw.size(0), static_cast<int64_t>(n));
    at::Tensor h = p.vlm_hidden(vp);
    at::Tensor sig = p.siglip_features(p.siglip_pixels(o.images));
    auto ts = p.assemble(vp.ids, h, sig, at::Tensor());
    EXPECT_EQ(ts.vision_end_positions.numel(), static_cast<int64_t>(n));
    rows.push_back(ts.prompt_embeds.size(1) - vp.ids.size(1));
    auto r = p.run(o);
    ASSERT_TRUE(r && std::holds_alternative<Image>(*r));
    EXPECT_EQ(std::get<Image>(*r).width, 64);
  }
  // each image adds its SigLIP tokens ((64 / 16)^2 = 16 in the tiny SigLIP)
  EXPECT_EQ(rows, (std::vector<int64_t>{16, 32, 48, 64}));
  // With snapping (cli.py), a 4:3 reference and anchor 64x64 gives 96x128.
  auto o = small("Remove blur, make it clear.", {gradient_image(128, 96, 1)});
  EXPECT_EQ(p.output_size(o), HW(96, 128));
  auto r = p.run(o);
  EXPECT_EQ(std::get<Image>(*r).height, 96);
  EXPECT_EQ(std::get<Image>(*r).width, 128);
}

TEST(UniWorldEndToEnd, PerceptionPromptsAreEditsAndTextAnswersComeFromTheVlm) {
  const auto& p = tiny_pipeline();
  const Image ref = gradient_image(48, 48, 3);
  auto depth = p.run(small("Estimate depth with a focus on background structure.", {ref}));
  auto canny = p.run(small("Generate a Canny edge map for this image.", {ref}));
  ASSERT_TRUE(depth && canny);
  EXPECT_TRUE(std::holds_alternative<Image>(*depth) && std::holds_alternative<Image>(*canny));
  EXPECT_NE(std::get<Image>(*depth).rgb, std::get<Image>(*canny).rgb);  // the instruction changes the conditioning

  auto o = small("What is in this picture?", {ref});
  o.task = UniWorldTask::Text;
  o.max_new_tokens = 6;
  auto t1 = p.run(o), t2 = p.run(o);
  ASSERT_TRUE(t1 && t2);
  EXPECT_FALSE(std::holds_alternative<Image>(*t1));
  EXPECT_EQ(std::get<std::string>(*t1), std::get<std::string>(*t2));  // greedy

  // auto: the task head decides, on the hidden state of the last 'assistant' token
  o.task = UniWorldTask::Auto;
  auto vp = p.build_prompt(o.prompt, o.images);
  const bool image = p.route_to_image(vp.ids, p.vlm_hidden(vp));
  auto a = p.run(o);
  ASSERT_TRUE(a);
  EXPECT_EQ(std::holds_alternative<Image>(*a), image);
  if (!image) EXPECT_EQ(std::get<std::string>(*a), std::get<std::string>(*t1));
}

TEST(UniWorldEndToEnd, CancelStopsTheRun) {
  int calls = 0;
  auto r = tiny_pipeline().run(small("A cat"), [&](const std::string& stage, int64_t step, int64_t) {
    ++calls;
    return !(stage == "denoise" && step == 1);
  });
  EXPECT_FALSE(r.has_value());
  EXPECT_GE(calls, 3);
}

TEST(UniWorldEndToEnd, TextAnswersReportEachTokenAndCancelWithinOne) {
  auto o = small("What is in this picture?", {gradient_image(48, 48, 3)});
  o.task = UniWorldTask::Text;
  o.max_new_tokens = 6;
  std::vector<int64_t> answer_steps;
  auto full = tiny_pipeline().run(o, [&](const std::string& stage, int64_t step, int64_t total) {
    if (stage == "answer") {
      EXPECT_EQ(total, 6);
      answer_steps.push_back(step);
    }
    return true;
  });
  ASSERT_TRUE(full);
  ASSERT_GE(answer_steps.size(), 2u) << "the tiny model's answer is too short to cancel in the middle";
  for (size_t i = 0; i < answer_steps.size(); ++i) EXPECT_EQ(answer_steps[i], static_cast<int64_t>(i + 1));
  int calls = 0;
  auto cut = tiny_pipeline().run(o, [&](const std::string& stage, int64_t step, int64_t) {
    calls += stage == "answer";
    return !(stage == "answer" && step == 1);
  });
  EXPECT_FALSE(cut.has_value());
  EXPECT_EQ(calls, 1);
}

TEST(UniWorldEndToEnd, BadInputsAreErrors) {
  const auto& p = tiny_pipeline();
  const fs::path d = tiny_root();
  EXPECT_THROW(UniWorldPipeline::load((d / "nope").string(), (d / "flux.1-dev").string(), (d / "siglip2").string()), Error);
  EXPECT_THROW(UniWorldPipeline::load((d / "uniworld-v1").string(), (d / "nope").string(), (d / "siglip2").string()), Error);
  EXPECT_THROW(UniWorldPipeline::load((d / "uniworld-v1").string(), (d / "flux.1-dev").string(), (d / "nope").string()), Error);
  // the FLUX folder where the UniWorld one belongs
  EXPECT_THROW(UniWorldPipeline::load((d / "flux.1-dev").string(), (d / "flux.1-dev").string(), (d / "siglip2").string()), Error);
  auto five = small("x", std::vector<Image>(5, gradient_image(32, 32, 0)));
  EXPECT_THROW(p.run(five), Error);
  auto odd = small("x");
  odd.width = 100;
  EXPECT_THROW(p.run(odd), Error);
  auto steps = small("x");
  steps.steps = 0;
  EXPECT_THROW(p.run(steps), Error);
  EXPECT_THROW(parse_uniworld_task("video"), Error);
}

TEST(UniWorldEndToEnd, LoadingIsStrict) {
  const fs::path d = tiny_root();
  auto with_tensors = [&](const fs::path& dir, const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
    fs::create_directories(dir);
    for (const char* f : {"config.json", "tokenizer.json", "preprocessor_config.json", "task_head_final.pt"})
      fs::copy_file(d / "uniworld-v1" / f, dir / f);
    auto file = SafetensorsFile::open((d / "uniworld-v1/model.safetensors").string());
    std::map<std::string, at::Tensor> t;
    for (const auto& info : file.tensors()) t[info.name] = file.get(info.name).clone();
    edit(t);
    save_safetensors((dir / "model.safetensors").string(), t);
    return dir.string();
  };
  TempDir tmp;
  const std::string flux = (d / "flux.1-dev").string(), sig = (d / "siglip2").string();
  // an unknown tensor, a missing projector, a projector of the wrong width
  EXPECT_THROW(UniWorldPipeline::load(with_tensors(tmp.path() / "extra", [](auto& t) { t["denoise_tower.extra"] = at::zeros({1}); }),
                                      flux, sig), Error);
  EXPECT_THROW(UniWorldPipeline::load(with_tensors(tmp.path() / "missing", [](auto& t) { t.erase("denoise_tower.siglip_projector.2.bias"); }),
                                      flux, sig), Error);
  EXPECT_THROW(UniWorldPipeline::load(with_tensors(tmp.path() / "width", [](auto& t) {
                                        t["denoise_tower.siglip_projector.0.weight"] = at::zeros({96, 20});
                                      }), flux, sig), Error);
  // the unchanged copy loads
  EXPECT_NO_THROW(UniWorldPipeline::load(with_tensors(tmp.path() / "same", [](auto&) {}), flux, sig));
}

TEST(UniWorldEndToEnd, CliWritesReproduciblePngsAndPrintsAnswers) {
  TempDir out;
  int rc = 0;
  const std::string base = "-W 64 -H 64 --steps 2 --seed 3 --task image ";
  std::string err = run_cli(base + "-p 'A lighthouse at dusk' -o " + (out.path() / "a.png").string(), &rc);
  ASSERT_EQ(rc, 0) << err;
  EXPECT_NE(err.find("denoise 2/2"), std::string::npos) << err;  // progress on stderr
  run_cli(base + "-p 'A lighthouse at dusk' -o " + (out.path() / "b.png").string(), &rc);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(read_bytes(out.path() / "a.png"), read_bytes(out.path() / "b.png"));
  auto text = read_png_text((out.path() / "a.png").string());
  ASSERT_EQ(text.size(), 1u);
  EXPECT_NE(text[0].second.find("A lighthouse at dusk"), std::string::npos);
  EXPECT_NE(text[0].second.find("Seed: 3"), std::string::npos);
  // the library gives the same pixels
  auto o = small("A lighthouse at dusk");
  o.seed = 3;
  EXPECT_EQ(load_image((out.path() / "a.png").string()).rgb, std::get<Image>(*tiny_pipeline().run(o)).rgb);

  // editing through the CLI
  save_png((out.path() / "ref.png").string(), gradient_image(64, 48, 5));
  err = run_cli(base + "-p 'Make it a watercolor.' -i " + (out.path() / "ref.png").string() + " -o " +
                    (out.path() / "edit.png").string(), &rc);
  ASSERT_EQ(rc, 0) << err;
  Image edited = load_image((out.path() / "edit.png").string());
  EXPECT_EQ(edited.width, 128);  // 4:3 at anchor 64x64: scale round(sqrt(4096 / (96 * 128))) = 1
  EXPECT_EQ(edited.height, 96);

  // a text answer on stdout, no PNG
  err = run_cli("--task text --max-new-tokens 5 -p 'Describe the image.' -i " + (out.path() / "ref.png").string() +
                    " -o " + (out.path() / "none.png").string(), &rc, out.path() / "answer.txt");
  ASSERT_EQ(rc, 0) << err;
  EXPECT_FALSE(fs::exists(out.path() / "none.png"));
  auto q = small("Describe the image.", {load_image((out.path() / "ref.png").string())});
  q.task = UniWorldTask::Text;
  q.max_new_tokens = 5;
  EXPECT_EQ(read_bytes(out.path() / "answer.txt"), std::get<std::string>(*tiny_pipeline().run(q)) + "\n");
}

TEST(UniWorldEndToEnd, CliRejectsBadInputs) {
  TempDir out;
  int rc = 0;
  const std::string o = " -o " + (out.path() / "x.png").string();
  std::string err = run_cli("-p x -W 100 -H 64" + o, &rc);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("multiple of 16"), std::string::npos) << err;
  save_png((out.path() / "r.png").string(), gradient_image(16, 16, 0));
  std::string five;
  for (int i = 0; i < 5; ++i) five += " -i " + (out.path() / "r.png").string();
  err = run_cli("-p x" + five + o, &rc);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("too many reference images"), std::string::npos) << err;
  write_bytes(out.path() / "bad.png", "\x89PNG\r\n\x1a\n this is not a png");
  err = run_cli("-p x -i " + (out.path() / "bad.png").string() + o, &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("bad.png"), std::string::npos) << err;
  err = run_cli("-p x --task video" + o, &rc);
  EXPECT_EQ(rc, 2);
  const std::string cmd = bin("omniflux-uniworld") + " --model " + (out.path() / "missing").string() + " --flux " +
                          (tiny_root() / "flux.1-dev").string() + " --siglip " + (tiny_root() / "siglip2").string() +
                          " -p x -W 64 -H 64 --steps 1" + o + " 2> " + (out.path() / "e.txt").string();
  EXPECT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 1);
  EXPECT_NE(read_bytes(out.path() / "e.txt").find("folder not found"), std::string::npos);
  // Checked before loading ("loaded" is never printed): the size after snapping to the aspect-ratio
  // table (4:3 at anchor 4096 x 4096 snaps to 4736 x 3552), the output folder, the numbers.
  save_png((out.path() / "wide.png").string(), gradient_image(64, 48, 1));
  err = run_cli("-p x -W 4096 -H 4096 -i " + (out.path() / "wide.png").string() + o, &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("snapped"), std::string::npos) << err;
  EXPECT_NE(err.find("4736"), std::string::npos) << err;
  EXPECT_EQ(err.find("loaded"), std::string::npos) << err;
  err = run_cli("-p x -W 64 -H 64 -o " + (out.path() / "none" / "x.png").string(), &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
  EXPECT_EQ(err.find("loaded"), std::string::npos) << err;
  err = run_cli("-p x --seed 18446744073709551616" + o, &rc);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("--seed"), std::string::npos) << err;
  err = run_cli("-p x --max-new-tokens 1000000000" + o, &rc);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("--max-new-tokens"), std::string::npos) << err;
  err = run_cli("-W 64 -H 64" + o, &rc);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("missing -p/--prompt"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out.path() / "x.png"));
}
