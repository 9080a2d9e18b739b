// Several images at once (issue 16, item 1): no fixture has them, so the property a batch must
// have is checked instead: a batch equals its items run alone. A SigLIP2 NaFlex batch of
// differently shaped images; Qwen2.5-VL with 2 and 3 images in one prompt (per-image vision
// features, and the LM logits over the shared prompt prefix); UniWorld edits with 3 and 4
// references through the library and the CLI.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <sys/wait.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "omniflux/io/image.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/models/qwen2_5_vl.h"
#include "omniflux/models/siglip2.h"
#include "omniflux/pipelines/uniworld.h"
#include "test_util.h"
#include "tiny_tokenizer.h"

namespace fs = std::filesystem;
using namespace omniflux;

namespace {

Image gradient(int w, int h, int salt) {
  Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>((x * 5 + y * 11 + c * 70 + salt * 31) % 256);
  return im;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

// Same-batch items only interact through padding masks, so batching must not change a result
// beyond float reassociation (1e-5 on activations of order 1).
TEST(MultiImage, Siglip2NaflexBatchOfDifferentShapesEqualsItemsAlone) {
  const auto proc = SiglipImageProcessorConfig::load(fixture("siglip2_vision"));
  auto model = Siglip2VisionModel::load(fixture("siglip2_vision"), {}, /*with_head=*/true);
  const std::vector<Image> images = {gradient(130, 90, 0), gradient(32, 32, 1), gradient(40, 160, 2), gradient(200, 50, 3)};
  const Siglip2Inputs batch = siglip2_preprocess(images, proc);
  const SiglipVisionOutput all = model.forward(batch.pixel_values, batch.pixel_attention_mask, batch.spatial_shapes);
  std::set<std::vector<int64_t>> shapes;
  for (size_t i = 0; i < images.size(); ++i) {
    const Siglip2Inputs one = siglip2_preprocess({images[i]}, proc);
    const int64_t k = static_cast<int64_t>(i);
    EXPECT_TRUE(at::equal(one.pixel_values[0], batch.pixel_values[k])) << i;
    EXPECT_TRUE(at::equal(one.pixel_attention_mask[0], batch.pixel_attention_mask[k])) << i;
    EXPECT_TRUE(at::equal(one.spatial_shapes[0], batch.spatial_shapes[k])) << i;
    shapes.insert({one.spatial_shapes[0][0].item<int64_t>(), one.spatial_shapes[0][1].item<int64_t>()});
    const SiglipVisionOutput alone = model.forward(one.pixel_values, one.pixel_attention_mask, one.spatial_shapes);
    const at::Tensor valid = one.pixel_attention_mask[0].to(at::kBool);
    EXPECT_LE(max_diff(alone.last_hidden_state[0].index({valid}), all.last_hidden_state[k].index({valid})), 1e-5) << i;
    EXPECT_LE(max_diff(alone.pooler_output[0], all.pooler_output[k]), 1e-5) << i;
  }
  EXPECT_GE(shapes.size(), 3u);  // the batch really mixes patch grids
}

namespace {

// The fixture Qwen2.5-VL (vocab 600) with a tiny tokenizer carrying the config's special ids.
Qwen2_5_VL vl_model(const TempDir& d) {
  for (const auto& e : fs::directory_iterator(fixture("qwen2_5_vl"))) fs::copy(e.path(), d.path() / e.path().filename());
  write_tiny_tokenizer((d.path() / "tokenizer.json").string(), 590,
                       {{"<|vision_start|>", 590}, {"<|vision_end|>", 591}, {"<|vision_pad|>", 592},
                        {"<|image_pad|>", 593}, {"<|video_pad|>", 594}, {"<|im_start|>", 595},
                        {"<|im_end|>", 596}, {"<|endoftext|>", 597}});
  return Qwen2_5_VL::load(d.path().string());
}

at::Tensor all_logits(const Qwen2_5_VL& m, const Qwen2_5_VL::Prompt& p) {
  auto cache = m.new_cache(1, p.ids.size(1));
  return m.prefill(p.ids, p.pixels.pixel_values, p.pixels.grid_thw, cache, {}, 0)[0];
}

// Position of the k-th <|vision_end|> (591).
int64_t vision_end(const at::Tensor& ids, int64_t k) { return ids[0].eq(591).nonzero()[k][0].item<int64_t>(); }

}  // namespace

TEST(MultiImage, Qwen2_5_VLTwoAndThreeImagesEqualTheirPartsAlone) {
  TempDir d;
  auto m = vl_model(d);
  const std::vector<Image> images = {gradient(100, 150, 0), gradient(90, 60, 1), gradient(56, 56, 2)};
  const std::string q = "Compare the pictures.";

  // Vision features: the tower on three images at once equals each image alone, in order.
  auto px = qwen2_5_vl_preprocess(images, m.preprocessor());
  at::Tensor feats = m.visual().forward(px.pixel_values, px.grid_thw);
  int64_t row = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    auto one = qwen2_5_vl_preprocess({images[i]}, m.preprocessor());
    at::Tensor f = m.visual().forward(one.pixel_values, one.grid_thw);
    EXPECT_LE(max_diff(f, feats.slice(0, row, row + f.size(0))), 1e-5) << i;
    row += f.size(0);
  }
  EXPECT_EQ(row, feats.size(0));

  // The LM is causal and M-RoPE positions only depend on what came before: the prompt with n
  // images matches the prompt with n - 1 images up to and including the (n-1)-th <|vision_end|>.
  for (size_t n = 2; n <= 3; ++n) {
    auto more = m.build_prompt(std::vector<Image>(images.begin(), images.begin() + n), q);
    auto fewer = m.build_prompt(std::vector<Image>(images.begin(), images.begin() + n - 1), q);
    const int64_t shared = vision_end(fewer.ids, static_cast<int64_t>(n) - 2) + 1;
    ASSERT_TRUE(at::equal(more.ids.slice(1, 0, shared), fewer.ids.slice(1, 0, shared)));
    EXPECT_EQ(more.ids.eq(593).sum().item<int64_t>(),
              fewer.ids.eq(593).sum().item<int64_t>() + px.grid_thw[n - 1].prod().item<int64_t>() / 4);
    at::Tensor a = all_logits(m, more), b = all_logits(m, fewer);
    EXPECT_LE(max_diff(a.slice(0, 0, shared), b.slice(0, 0, shared)), 1e-4) << n << " images";
    // and the positions after differ (the extra image is really seen)
    EXPECT_GT(max_diff(a.slice(0, -1), b.slice(0, -1)), 0.0);
    Qwen2_5_VL::AnswerOptions o;
    o.max_new_tokens = 3;
    EXPECT_NO_THROW(m.answer(std::vector<Image>(images.begin(), images.begin() + n), q, o));
  }
}

namespace {

const fs::path& tiny_root() { return tiny_folders(5, {"flux_1_dev", "uniworld_v1", "siglip2"}); }

}  // namespace

// 3 and 4 references end to end: the library's image, the CLI's PNG (same thread count, so the
// same arithmetic) and the per-reference SigLIP rows.
TEST(MultiImage, UniWorldEditsWithThreeAndFourReferencesLibraryAndCli) {
  const fs::path root = tiny_root();
  auto p = UniWorldPipeline::load((root / "uniworld-v1").string(), (root / "flux.1-dev").string(), (root / "siglip2").string());
  TempDir out;
  const std::vector<Image> refs = {gradient(48, 32, 1), gradient(32, 48, 2), gradient(40, 40, 3), gradient(64, 24, 4)};
  for (size_t i = 0; i < refs.size(); ++i) save_png((out.path() / ("ref" + std::to_string(i) + ".png")).string(), refs[i]);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  for (size_t n = 3; n <= 4; ++n) {
    UniWorldOptions o;
    o.prompt = "Put the subject of Image1 into the style of Image" + std::to_string(n) + ".";
    o.images.assign(refs.begin(), refs.begin() + n);
    o.width = o.height = 64;
    o.steps = 2;
    o.seed = 11;
    o.task = UniWorldTask::Image;
    auto vp = p.build_prompt(o.prompt, o.images);
    EXPECT_EQ(vp.pixels.grid_thw.size(0), static_cast<int64_t>(n));
    auto ts = p.assemble(vp.ids, p.vlm_hidden(vp), p.siglip_features(p.siglip_pixels(o.images)), at::Tensor());
    EXPECT_EQ(ts.vision_end_positions.numel(), static_cast<int64_t>(n));
    auto r = p.run(o);
    ASSERT_TRUE(r && std::holds_alternative<Image>(*r));
    const auto [h, w] = p.output_size(o);
    EXPECT_EQ(std::get<Image>(*r).height, h);
    EXPECT_EQ(std::get<Image>(*r).width, w);

    std::string args;
    for (size_t i = 0; i < n; ++i) args += " -i " + (out.path() / ("ref" + std::to_string(i) + ".png")).string();
    const fs::path png = out.path() / ("edit" + std::to_string(n) + ".png");
    const std::string cmd = bin("omniflux-uniworld") + " --model " + (root / "uniworld-v1").string() + " --flux " +
                            (root / "flux.1-dev").string() + " --siglip " + (root / "siglip2").string() +
                            " -p '" + o.prompt + "'" + args + " -W 64 -H 64 --steps 2 --seed 11 --task image --threads 1 -o " +
                            png.string() + " --quiet 2> " + (out.path() / "err.txt").string();
    const int st = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << read_bytes(out.path() / "err.txt");
    const Image cli = load_image(png.string());
    EXPECT_EQ(cli.width, std::get<Image>(*r).width);
    EXPECT_EQ(cli.height, std::get<Image>(*r).height);
    EXPECT_EQ(cli.rgb, std::get<Image>(*r).rgb) << n << " references";
  }
  at::set_num_threads(threads);
}
