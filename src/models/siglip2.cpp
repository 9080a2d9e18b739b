// SigLIP vision towers: NaFlex Siglip2VisionModel and classic SiglipVisionModel. Reference:
// transformers models/siglip2/modeling_siglip2.py and models/siglip/modeling_siglip.py (4.51).
#include "omniflux/models/siglip2.h"

#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"
#include "nn/debug.h"
#include "nn/encoder_layer.h"
#include "nn/ops.h"

namespace omniflux {

SiglipVisionConfig SiglipVisionConfig::from(const Config& root) {
  const Config c = root.has("vision_config") ? root.sub("vision_config") : root;
  SiglipVisionConfig cfg;
  cfg.hidden_size = c.get_size("hidden_size", cfg.hidden_size);
  cfg.intermediate_size = c.get_size("intermediate_size", cfg.intermediate_size);
  cfg.num_hidden_layers = c.get_int("num_hidden_layers", cfg.num_hidden_layers, 0, 4096);
  cfg.num_attention_heads = c.get_int("num_attention_heads", cfg.num_attention_heads, 1, 4096);
  cfg.num_channels = c.get_int("num_channels", cfg.num_channels, 1, 64);
  cfg.patch_size = c.get_int("patch_size", cfg.patch_size, 1, 1024);
  cfg.image_size = c.get_int("image_size", cfg.image_size, 1, 1 << 16);
  cfg.num_patches = c.get_size("num_patches", cfg.num_patches);
  cfg.hidden_act = c.get_string("hidden_act", cfg.hidden_act);
  cfg.layer_norm_eps = c.get_epsilon("layer_norm_eps", cfg.layer_norm_eps);
  cfg.use_head = c.get_bool("vision_use_head", cfg.use_head);
  nn::parse_activation(cfg.hidden_act, c.where("hidden_act"));
  c.check(cfg.hidden_size % cfg.num_attention_heads == 0, "hidden_size",
          "a multiple of num_attention_heads " + std::to_string(cfg.num_attention_heads), std::to_string(cfg.hidden_size));
  c.check(cfg.image_size >= cfg.patch_size, "image_size", ">= patch_size " + std::to_string(cfg.patch_size),
          std::to_string(cfg.image_size));
  return cfg;
}

namespace detail {

// What both towers share after the patch embedding: encoder, post_layernorm, pooling head.
struct SiglipTower {
  SiglipVisionConfig cfg;
  nn::Activation act;
  std::vector<nn::EncoderLayerWeights> layers;
  at::Tensor post_ln_w, post_ln_b;
  bool with_head = false;
  // Siglip(2)MultiheadAttentionPoolingHead: nn.MultiheadAttention with packed [Wq; Wk; Wv].
  at::Tensor probe, in_proj_w, in_proj_b, head_out_w, head_out_b, head_ln_w, head_ln_b, head_fc1_w, head_fc1_b,
      head_fc2_w, head_fc2_b;

  SiglipTower(const WeightView& w, const SiglipVisionConfig& c, bool head) : cfg(c), with_head(head) {
    act = nn::parse_activation(c.hidden_act, "SigLIP hidden_act");
    const int64_t d = c.hidden_size, m = c.intermediate_size;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      WeightView l = w.sub("encoder.layers").sub(i);
      nn::EncoderLayerWeights e;
      e.ln1_w = l.get("layer_norm1.weight", {d});
      e.ln1_b = l.get("layer_norm1.bias", {d});
      e.qkv = nn::Linear::fuse({nn::Linear::load(l, "self_attn.q_proj", d, d), nn::Linear::load(l, "self_attn.k_proj", d, d),
                                nn::Linear::load(l, "self_attn.v_proj", d, d)});
      e.out = nn::Linear::load(l, "self_attn.out_proj", d, d);
      e.ln2_w = l.get("layer_norm2.weight", {d});
      e.ln2_b = l.get("layer_norm2.bias", {d});
      e.fc1 = nn::Linear::load(l, "mlp.fc1", d, m);
      e.fc2 = nn::Linear::load(l, "mlp.fc2", m, d);
      layers.push_back(std::move(e));
    }
    post_ln_w = w.get("post_layernorm.weight", {d});
    post_ln_b = w.get("post_layernorm.bias", {d});
    if (head && !c.use_head)
      throw Error("the pooling head was asked for but the config disables it", w.key("head"),
                  "vision_use_head true", "false");
    if (head) {
      WeightView h = w.sub("head");
      probe = h.get("probe", {1, 1, d});
      in_proj_w = h.get("attention.in_proj_weight", {3 * d, d});
      in_proj_b = h.get("attention.in_proj_bias", {3 * d});
      head_out_w = h.get("attention.out_proj.weight", {d, d});
      head_out_b = h.get("attention.out_proj.bias", {d});
      head_ln_w = h.get("layernorm.weight", {d});
      head_ln_b = h.get("layernorm.bias", {d});
      head_fc1_w = h.get("mlp.fc1.weight", {m, d});
      head_fc1_b = h.get("mlp.fc1.bias", {m});
      head_fc2_w = h.get("mlp.fc2.weight", {d, m});
      head_fc2_b = h.get("mlp.fc2.bias", {d});
    } else {
      w.store().ignore_prefix(w.key("head."));
    }
  }

  // x: embeddings [B, L, D]; keys: bool [B, L] (true = real patch) or undefined.
  SiglipVisionOutput run(at::Tensor x, const at::Tensor& keys) const {
    nn::EncoderLayerOptions opt;
    opt.num_heads = cfg.num_attention_heads;
    opt.eps = cfg.layer_norm_eps;
    opt.act = act;
    // _prepare_4d_attention_mask: padded keys are masked for every query.
    if (keys.defined()) opt.attn.mask = keys.view({keys.size(0), 1, 1, keys.size(1)});
    std::vector<at::Tensor> layer_outputs;
    for (const auto& l : layers) {
      x = nn::encoder_layer(x, l, opt);
      if (tapping()) layer_outputs.push_back(x);
    }
    if (tapping() && !layer_outputs.empty()) tap("inter_layer_outputs", at::stack(layer_outputs));
    SiglipVisionOutput out;
    out.last_hidden_state = nn::layer_norm(x, post_ln_w, post_ln_b, cfg.layer_norm_eps);
    if (with_head) out.pooler_output = pool(out.last_hidden_state, opt.attn.mask);
    return out;
  }

  // MAP head: probe attends over the tokens (padded keys masked), then h + mlp(layernorm(h)).
  at::Tensor pool(const at::Tensor& hidden, const at::Tensor& mask) const {
    const int64_t b = hidden.size(0), l = hidden.size(1), d = cfg.hidden_size, nh = cfg.num_attention_heads;
    auto heads = [&](const at::Tensor& t, int64_t len) { return t.view({b, len, nh, d / nh}).transpose(1, 2); };
    const auto w = in_proj_w.chunk(3, 0), bias = in_proj_b.chunk(3, 0);  // [Wq; Wk; Wv]
    at::Tensor q = heads(nn::linear(probe.expand({b, 1, d}), w[0], bias[0]), 1);
    at::Tensor k = heads(nn::linear(hidden, w[1], bias[1]), l), v = heads(nn::linear(hidden, w[2], bias[2]), l);
    nn::AttentionOptions ao;
    ao.mask = mask;
    at::Tensor h = nn::attention(q, k, v, ao).transpose(1, 2).reshape({b, 1, d});
    h = nn::linear(h, head_out_w, head_out_b);
    at::Tensor m = nn::layer_norm(h, head_ln_w, head_ln_b, cfg.layer_norm_eps);
    h = h + nn::linear(nn::activate(nn::linear(m, head_fc1_w, head_fc1_b), act), head_fc2_w, head_fc2_b);
    return h.select(1, 0);
  }
};

}  // namespace detail

namespace {

// Loads `folder` and marks the parts of a full Siglip(2)Model that a vision tower never reads.
template <class Model>
Model load_vision(const std::string& folder, const RuntimeOptions& rt, bool with_head) {
  SiglipVisionConfig cfg = SiglipVisionConfig::load(folder);
  auto store = WeightStore::open(folder, rt);
  store->ignore_prefix("text_model.");
  store->ignore_prefix("logit_scale");
  store->ignore_prefix("logit_bias");
  Model m(store->root().sub("vision_model"), cfg, with_head);
  store->finish();
  return m;
}

int64_t square_side(int64_t n, const std::string& where) {
  const int64_t g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  if (g * g != n) throw Error("the position table is not a square grid", where, "a square count", std::to_string(n));
  return g;
}

}  // namespace

// ---- Siglip2VisionModel (NaFlex) -------------------------------------------------------------------

Siglip2VisionModel::Siglip2VisionModel(const WeightView& w, const SiglipVisionConfig& cfg, bool with_head) {
  const int64_t d = cfg.hidden_size, p = cfg.patch_size;
  square_side(cfg.num_patches, w.key("embeddings.position_embedding.weight"));
  patch_w_ = w.get("embeddings.patch_embedding.weight", {d, cfg.num_channels * p * p});
  patch_b_ = w.get("embeddings.patch_embedding.bias", {d});
  pos_table_ = w.get("embeddings.position_embedding.weight", {cfg.num_patches, d});
  tower_ = std::make_shared<detail::SiglipTower>(w, cfg, with_head);
}

Siglip2VisionModel Siglip2VisionModel::load(const std::string& folder, const RuntimeOptions& rt, bool with_head) {
  return load_vision<Siglip2VisionModel>(folder, rt, with_head);
}

const SiglipVisionConfig& Siglip2VisionModel::config() const { return tower_->cfg; }
bool Siglip2VisionModel::has_head() const { return tower_->with_head; }

SiglipVisionOutput Siglip2VisionModel::forward(const at::Tensor& pixel_values, const at::Tensor& pixel_attention_mask,
                                               const at::Tensor& spatial_shapes) const {
  const SiglipVisionConfig& cfg = tower_->cfg;
  const int64_t d = cfg.hidden_size, row = patch_w_.size(1);
  const std::string where = "Siglip2VisionModel::forward";
  if (pixel_values.dim() != 3 || pixel_values.size(2) != row)
    throw Error("pixel_values are not patch rows", where, "[B, N, " + std::to_string(row) + "]",
                shape_str(pixel_values.sizes().vec()));
  const int64_t b = pixel_values.size(0), n = pixel_values.size(1);
  if (pixel_attention_mask.sizes() != at::IntArrayRef({b, n}))
    throw Error("pixel_attention_mask does not match pixel_values", where, shape_str({b, n}),
                shape_str(pixel_attention_mask.sizes().vec()));
  if (spatial_shapes.sizes() != at::IntArrayRef({b, 2}) || spatial_shapes.is_floating_point())
    throw Error("spatial_shapes must be integer (patches_h, patches_w) rows", where, shape_str({b, 2}),
                shape_str(spatial_shapes.sizes().vec()));
  at::Tensor shapes = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
  at::Tensor valid = pixel_attention_mask.to(at::kCPU, at::kLong).sum(1);

  at::Tensor x = nn::linear(pixel_values.to(patch_w_.options()), patch_w_, patch_b_);  // [B, N, D]
  // Position table (G, G, D) -> (1, D, G, G), resized per image in fp32 (HF upcasts on CPU; we do
  // everywhere, which HF's GPU path only does not). Pad rows take row 0 of the resized table.
  const int64_t g = square_side(pos_table_.size(0), "position_embedding");
  at::Tensor table = pos_table_.to(at::kFloat).view({g, g, d}).permute({2, 0, 1}).unsqueeze(0);
  std::vector<at::Tensor> pos;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t h = shapes[i][0].item<int64_t>(), w = shapes[i][1].item<int64_t>();
    if (h <= 0 || w <= 0 || h * w > n || valid[i].item<int64_t>() != h * w)
      throw Error("spatial_shapes do not agree with the mask", where,
                  "patches_h * patches_w == real patches <= " + std::to_string(n),
                  "image " + std::to_string(i) + ": " + std::to_string(h) + "x" + std::to_string(w) + ", " +
                      std::to_string(valid[i].item<int64_t>()) + " real patches");
    // F.interpolate(bilinear, align_corners=False, antialias=True) with an explicit size.
    at::Tensor r = at::_upsample_bilinear2d_aa(table, {h, w}, /*align_corners=*/false);
    r = r.reshape({d, h * w}).t();  // raster order
    pos.push_back(n > h * w ? at::cat({r, r.slice(0, 0, 1).expand({n - h * w, d})}, 0) : r);
  }
  x = x + at::stack(pos).to(x.scalar_type());
  tap("inter_embeddings", x);
  return tower_->run(x, pixel_attention_mask.to(x.device()).ne(0));
}

// ---- SiglipVisionModel (classic / FixRes) -----------------------------------------------------------

SiglipVisionModel::SiglipVisionModel(const WeightView& w, const SiglipVisionConfig& cfg, bool with_head) {
  const int64_t d = cfg.hidden_size, p = cfg.patch_size, side = cfg.image_size / cfg.patch_size;
  patch_w_ = w.get("embeddings.patch_embedding.weight", {d, cfg.num_channels, p, p});
  patch_b_ = w.get("embeddings.patch_embedding.bias", {d});
  pos_table_ = w.get("embeddings.position_embedding.weight", {side * side, d});
  tower_ = std::make_shared<detail::SiglipTower>(w, cfg, with_head);
}

SiglipVisionModel SiglipVisionModel::load(const std::string& folder, const RuntimeOptions& rt, bool with_head) {
  return load_vision<SiglipVisionModel>(folder, rt, with_head);
}

const SiglipVisionConfig& SiglipVisionModel::config() const { return tower_->cfg; }
bool SiglipVisionModel::has_head() const { return tower_->with_head; }

SiglipVisionOutput SiglipVisionModel::forward(const at::Tensor& pixel_values) const {
  const SiglipVisionConfig& cfg = tower_->cfg;
  const int64_t s = cfg.image_size;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != cfg.num_channels || pixel_values.size(2) != s ||
      pixel_values.size(3) != s)
    throw Error("pixel_values do not have the model's fixed size", "SiglipVisionModel::forward",
                shape_str({-1, cfg.num_channels, s, s}), shape_str(pixel_values.sizes().vec()));
  const int64_t p = cfg.patch_size;
  // Conv2d(k = stride = P, 'valid') -> [B, D, S/P, S/P] -> [B, (S/P)^2, D], raster order.
  at::Tensor x = at::conv2d(pixel_values.to(patch_w_.options()), patch_w_, patch_b_, {p, p});
  x = x.flatten(2).transpose(1, 2) + pos_table_.unsqueeze(0);
  tap("inter_embeddings", x);
  return tower_->run(x, at::Tensor());
}

// ---- image processors ---------------------------------------------------------------------------

std::pair<int64_t, int64_t> naflex_target_size(int64_t height, int64_t width, int64_t patch_size,
                                               int64_t max_num_patches) {
  if (height <= 0 || width <= 0 || patch_size <= 0 || max_num_patches <= 0)
    throw Error("impossible NaFlex resize arguments", "naflex_target_size",
                "positive image size, patch_size and max_num_patches",
                std::to_string(height) + "x" + std::to_string(width) + ", patch " + std::to_string(patch_size) +
                    ", max " + std::to_string(max_num_patches));
  // ceil(side * scale / p) * p, at least one patch (get_scaled_image_size).
  auto scaled = [&](double scale, int64_t side) {
    const double s = static_cast<double>(side) * scale;
    return std::max<int64_t>(patch_size, static_cast<int64_t>(std::ceil(s / patch_size)) * patch_size);
  };
  const double eps = 1e-5;
  double lo = eps / 10, hi = 100.0;
  while (hi - lo >= eps) {
    const double scale = (lo + hi) / 2;
    const int64_t n = (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size);
    if (n <= max_num_patches) lo = scale;
    else hi = scale;
  }
  const int64_t th = scaled(lo, height), tw = scaled(lo, width);
  if ((th / patch_size) * (tw / patch_size) > max_num_patches)
    throw Error("the image cannot fit max_num_patches even at one patch per side", "naflex_target_size",
                "<= " + std::to_string(max_num_patches) + " patches",
                std::to_string(th / patch_size) + "x" + std::to_string(tw / patch_size));
  return {th, tw};
}

SiglipImageProcessorConfig SiglipImageProcessorConfig::from(const Config& c) {
  SiglipImageProcessorConfig cfg;
  const bool naflex = c.get_string("image_processor_type", "") == "Siglip2ImageProcessor";
  if (naflex) cfg.resample = 2;  // Siglip2ImageProcessor's default is BILINEAR
  cfg.do_resize = c.get_bool("do_resize", cfg.do_resize);
  cfg.do_rescale = c.get_bool("do_rescale", cfg.do_rescale);
  cfg.do_normalize = c.get_bool("do_normalize", cfg.do_normalize);
  cfg.resample = c.get_int("resample", cfg.resample, 2, 3);
  cfg.rescale_factor = c.get_positive("rescale_factor", cfg.rescale_factor, 1.0);
  // A zero or tiny std would turn every pixel into Inf/NaN.
  cfg.image_mean = c.get_double_list("image_mean", cfg.image_mean, -1e3, 1e3);
  cfg.image_std = c.get_double_list("image_std", cfg.image_std, 1e-6, 1e3);
  if (c.has("size")) {
    const Config size = c.sub("size");
    cfg.height = size.get_int("height", cfg.height, 1, 1 << 16);
    cfg.width = size.get_int("width", cfg.width, 1, 1 << 16);
  }
  cfg.patch_size = c.get_int("patch_size", cfg.patch_size, 1, 1024);
  cfg.max_num_patches = c.get_int("max_num_patches", cfg.max_num_patches, 1, 1 << 20);
  c.check(cfg.image_mean.size() == 3, "image_mean", "3 values (RGB)", std::to_string(cfg.image_mean.size()));
  c.check(cfg.image_std.size() == 3, "image_std", "3 values (RGB)", std::to_string(cfg.image_std.size()));
  return cfg;
}

SiglipImageProcessorConfig SiglipImageProcessorConfig::load(const std::string& file_or_folder) {
  std::filesystem::path p(file_or_folder);
  if (std::filesystem::is_directory(p)) p /= "preprocessor_config.json";
  return from(Config::load(p.string()));
}

namespace {

// Checks an Image is what it claims: 8-bit RGB, 3 bytes per pixel.
void check_rgb(const Image& img, const std::string& where) {
  const int64_t want = int64_t(img.width) * img.height * 3;
  if (img.width <= 0 || img.height <= 0 || static_cast<int64_t>(img.rgb.size()) != want)
    throw Error("image is not 8-bit RGB", where,
                std::to_string(img.width) + "x" + std::to_string(img.height) + "x3 = " + std::to_string(want) + " bytes",
                std::to_string(img.rgb.size()) + " bytes" +
                    (img.rgb.size() * 3 == static_cast<size_t>(want) ? " (one channel: a grey image?)" : ""));
}

// uint8 HWC -> float32 HWC like HF's slow processors: rescale in float64 then float32, normalise in
// float32.
at::Tensor rescale_normalize(const at::Tensor& u8, const SiglipImageProcessorConfig& cfg) {
  at::Tensor x = cfg.do_rescale ? (u8.to(at::kDouble) * cfg.rescale_factor).to(at::kFloat) : u8.to(at::kFloat);
  if (cfg.do_normalize) {
    at::Tensor mean = at::tensor(std::vector<double>(cfg.image_mean)).to(at::kFloat);
    at::Tensor std = at::tensor(std::vector<double>(cfg.image_std)).to(at::kFloat);
    x = (x - mean) / std;
  }
  return x;
}

Resample pil_filter(int64_t code) { return code == 2 ? Resample::Bilinear : Resample::Bicubic; }

}  // namespace

Siglip2Inputs siglip2_preprocess(const std::vector<Image>& images, const SiglipImageProcessorConfig& cfg) {
  const int64_t p = cfg.patch_size, n = cfg.max_num_patches, b = static_cast<int64_t>(images.size());
  Siglip2Inputs out;
  out.pixel_values = at::zeros({b, n, p * p * 3}, at::kFloat);
  out.pixel_attention_mask = at::zeros({b, n}, at::kInt);
  out.spatial_shapes = at::zeros({b, 2}, at::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const Image& img = images[i];
    const std::string where = "siglip2_preprocess: image " + std::to_string(i);
    check_rgb(img, where);
    Image resized = img;
    if (cfg.do_resize) {
      auto [th, tw] = naflex_target_size(img.height, img.width, p, n);
      resized = resize(img, static_cast<int>(tw), static_cast<int>(th), pil_filter(cfg.resample));
    } else if (img.height % p != 0 || img.width % p != 0 || (img.height / p) * (img.width / p) > n) {
      throw Error("without do_resize the image must already fit the patch grid", where,
                  "sides multiple of " + std::to_string(p) + ", <= " + std::to_string(n) + " patches",
                  std::to_string(img.width) + "x" + std::to_string(img.height));
    }
    const int64_t nh = resized.height / p, nw = resized.width / p;
    at::Tensor x = rescale_normalize(image_to_tensor(resized), cfg);  // [H, W, 3]
    // (nh, p, nw, p, C) -> (nh, nw, p, p, C) -> [nh*nw, p*p*C]
    x = x.view({nh, p, nw, p, 3}).permute({0, 2, 1, 3, 4}).reshape({nh * nw, p * p * 3});
    out.pixel_values[i].slice(0, 0, nh * nw).copy_(x);
    out.pixel_attention_mask[i].slice(0, 0, nh * nw).fill_(1);
    out.spatial_shapes[i][0] = nh;
    out.spatial_shapes[i][1] = nw;
  }
  return out;
}

at::Tensor siglip_preprocess(const std::vector<Image>& images, const SiglipImageProcessorConfig& cfg) {
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string where = "siglip_preprocess: image " + std::to_string(i);
    check_rgb(images[i], where);
    Image r = images[i];
    if (cfg.do_resize) {
      r = resize(images[i], static_cast<int>(cfg.width), static_cast<int>(cfg.height), pil_filter(cfg.resample));
    } else if (r.height != cfg.height || r.width != cfg.width) {
      throw Error("without do_resize the image must have the processor's size", where,
                  std::to_string(cfg.width) + "x" + std::to_string(cfg.height),
                  std::to_string(r.width) + "x" + std::to_string(r.height));
    }
    out.push_back(rescale_normalize(image_to_tensor(r), cfg).permute({2, 0, 1}));  // CHW
  }
  if (out.empty()) return at::zeros({0, 3, cfg.height, cfg.width}, at::kFloat);
  return at::stack(out).contiguous();
}

}  // namespace omniflux
