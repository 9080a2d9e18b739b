// X-Omni SigLIP-VQ tokenizer: ViT-g encoder, VQConvProjector (quantizer + decoder half) and the
// any-resolution preprocessing rules. Reference: HF remote code modeling_siglip_tokenizer.py
// (X-Omni/X-Omni-En); docs/models/xomni.md §2.
#include "omniflux/models/siglip_vq.h"

#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"
#include "nn/debug.h"
#include "nn/encoder_layer.h"
#include "nn/ops.h"

namespace fs = std::filesystem;

namespace omniflux {

namespace {

// The config next to a checkpoint: `config_path` when given, else `weights_path`'s folder's
// config.json when there is one.
std::optional<Config> find_config(const std::string& weights_path, const std::string& config_path) {
  if (!config_path.empty()) return Config::load(config_path);
  fs::path p(weights_path);
  fs::path dir = fs::is_directory(p) ? p : p.parent_path();
  if (!dir.empty() && fs::exists(dir / "config.json")) return Config::load((dir / "config.json").string());
  return std::nullopt;
}

// F.normalize(x, dim=-1): x / max(|x|, 1e-12).
at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, -1, /*keepdim=*/true).clamp_min(1e-12); }

std::string list_keys(const std::vector<std::string>& keys, size_t max = 40) {
  std::ostringstream s;
  for (size_t i = 0; i < keys.size() && i < max; ++i) s << (i ? ", " : "") << keys[i];
  if (keys.size() > max) s << ", ... (" << keys.size() << " keys)";
  return s.str();
}

}  // namespace

// ---- SiglipVQ (VQConvProjector) -------------------------------------------------------------------

SiglipVQConfig SiglipVQConfig::from(const Config& c) {
  SiglipVQConfig cfg;
  cfg.z_channels = c.get_size("z_channels", cfg.z_channels);
  cfg.codebook_size = c.get_size("codebook_size", cfg.codebook_size);
  cfg.codebook_dim = c.get_size("codebook_dim", cfg.codebook_dim);
  cfg.conv_layers = c.get_int("conv_layers", cfg.conv_layers, 0, 1024);
  cfg.num_groups = c.get_size("num_groups", cfg.num_groups);
  cfg.group_norm_eps = c.get_epsilon("group_norm_eps", cfg.group_norm_eps);
  c.check(cfg.z_channels % cfg.num_groups == 0, "z_channels", "a multiple of num_groups " + std::to_string(cfg.num_groups),
          std::to_string(cfg.z_channels));
  return cfg;
}

SiglipVQ::SiglipVQ(const WeightView& w, const SiglipVQConfig& cfg) : cfg_(cfg) {
  const int64_t c1 = cfg.z_channels, c2 = cfg.codebook_dim;
  quant_conv_w_ = w.get("quant_conv.weight", {c2, c1, 1, 1});
  quant_conv_b_ = w.get("quant_conv.bias", {c2});
  codebook_ = w.get("quantize.embedding.weight", {cfg.codebook_size, c2});
  post_quant_conv_w_ = w.get("post_quant_conv.weight", {c1, c2, 1, 1});
  post_quant_conv_b_ = w.get("post_quant_conv.bias", {c1});
  for (int64_t i = 0; i < cfg.conv_layers; ++i) {
    WeightView b = w.sub("post_conv").sub(i);
    post_conv_.push_back({b.get("norm1.weight", {c1}), b.get("norm1.bias", {c1}),
                          b.get("conv1.weight", {c1, c1, 3, 3}), b.get("conv1.bias", {c1}),
                          b.get("norm2.weight", {c1}), b.get("norm2.bias", {c1}),
                          b.get("conv2.weight", {c1, c1, 3, 3}), b.get("conv2.bias", {c1})});
  }
  // IBQ (l2_norm=True) compares against normalised rows; decode uses the raw ones.
  codebook_normed_ = l2_normalize(codebook_);
}

SiglipVQ SiglipVQ::load(const std::string& path, const RuntimeOptions& rt, const std::string& config_path) {
  auto c = find_config(path, config_path);
  SiglipVQConfig cfg = c ? SiglipVQConfig::from(*c) : SiglipVQConfig{};
  auto store = WeightStore::open(path, rt);
  SiglipVQ m(store->root(), cfg);
  store->finish();  // VQConvProjector is loaded strict=True
  return m;
}

at::Tensor SiglipVQ::encode(const at::Tensor& features, int64_t h, int64_t w) const {
  const bool batched = features.dim() == 3;
  if ((features.dim() != 2 && !batched) || h <= 0 || w <= 0 || features.size(-2) != h * w ||
      features.size(-1) != cfg_.z_channels)
    throw Error("features do not fit the token grid", "SiglipVQ::encode",
                "[B, h*w, " + std::to_string(cfg_.z_channels) + "] with h*w = " + std::to_string(h * w),
                shape_str(features.sizes().vec()) + " for h=" + std::to_string(h) + ", w=" + std::to_string(w));
  at::Tensor x = batched ? features : features.unsqueeze(0);
  const int64_t b = x.size(0);
  x = x.to(quant_conv_w_.options());
  // 'b (h w) c -> b c h w'
  x = x.view({b, h, w, cfg_.z_channels}).permute({0, 3, 1, 2});
  at::Tensor z = at::conv2d(x, quant_conv_w_, quant_conv_b_);  // [B, C2, h, w]
  tap("inter_quant_conv", z);
  // 'b c h w -> (b h w) c', then IBQ's squared distances between normalised vectors.
  at::Tensor zf = l2_normalize(z.permute({0, 2, 3, 1}).reshape({-1, cfg_.codebook_dim}));
  at::Tensor d = zf.pow(2).sum(1, /*keepdim=*/true) + codebook_normed_.pow(2).sum(1) -
                 2 * at::matmul(zf, codebook_normed_.t());  // [B*h*w, K]
  tap("inter_distances", d);
  at::Tensor codes = d.argmin(1).view({b, h * w});
  return batched ? codes : codes.squeeze(0);
}

at::Tensor SiglipVQ::decode(const at::Tensor& codes, int64_t h, int64_t w) const {
  const bool batched = codes.dim() == 2;
  if ((codes.dim() != 1 && !batched) || h <= 0 || w <= 0 || codes.size(-1) != h * w)
    throw Error("codes do not fit the token grid", "SiglipVQ::decode",
                "[B, h*w] with h*w = " + std::to_string(h * w),
                shape_str(codes.sizes().vec()) + " for h=" + std::to_string(h) + ", w=" + std::to_string(w));
  if (codes.is_floating_point() || codes.scalar_type() == at::kBool)
    throw Error("codes must be integers", "SiglipVQ::decode", "int64", std::string(c10::toString(codes.scalar_type())));
  // Range check where the codes are (the pipelines hand them over from the host) before the move.
  if (codes.numel() > 0 && !codes.is_meta()) {
    const int64_t lo = codes.min().item<int64_t>(), hi = codes.max().item<int64_t>();
    if (lo < 0 || hi >= cfg_.codebook_size)
      throw Error("code out of the codebook range", "SiglipVQ::decode",
                  "0 <= code < " + std::to_string(cfg_.codebook_size),
                  std::to_string(lo < 0 ? lo : hi));
  }
  at::Tensor idx = (batched ? codes : codes.unsqueeze(0)).to(codebook_.device(), at::kLong);
  const int64_t b = idx.size(0);
  // get_codebook_entry: RAW rows (not re-normalised) -> view (b, h, w, C2) -> NCHW.
  at::Tensor z = codebook_.index_select(0, idx.reshape({-1})).view({b, h, w, cfg_.codebook_dim}).permute({0, 3, 1, 2});
  z = at::conv2d(z, post_quant_conv_w_, post_quant_conv_b_);  // [B, C1, h, w]
  tap("inter_post_quant_conv", z);
  for (size_t i = 0; i < post_conv_.size(); ++i) {
    const ResidualBlock& r = post_conv_[i];
    // ResidualBlock: GroupNorm, exact GELU (nn.GELU()), 3x3 conv 'same'; twice; plus the input.
    at::Tensor y = nn::gelu(nn::group_norm(z, cfg_.num_groups, r.norm1_w, r.norm1_b, cfg_.group_norm_eps));
    y = at::conv2d(y, r.conv1_w, r.conv1_b, /*stride=*/{1, 1}, /*padding=*/{1, 1});
    y = nn::gelu(nn::group_norm(y, cfg_.num_groups, r.norm2_w, r.norm2_b, cfg_.group_norm_eps));
    y = at::conv2d(y, r.conv2_w, r.conv2_b, {1, 1}, {1, 1});
    z = y + z;
    tap("inter_post_conv_" + std::to_string(i), z);
  }
  // 'b c h w -> b (h w) c' (XOmniForCausalLM.detokenize_image)
  at::Tensor out = z.flatten(2).transpose(1, 2).contiguous();
  return batched ? out : out.squeeze(0);
}

// ---- SiglipViT (SigLIP2-g encoder) ------------------------------------------------------------------

SiglipViTConfig SiglipViTConfig::from(const Config& c) {
  SiglipViTConfig cfg;
  auto pick = [&](const char* a, const char* b, int64_t def, int64_t lo, int64_t hi) {
    return c.has(a) ? c.get_int_in(a, lo, hi) : c.get_int(b, def, lo, hi);
  };
  cfg.hidden_size = pick("hidden_size", "width", cfg.hidden_size, 1, Config::kMaxSize);
  cfg.intermediate_size = pick("intermediate_size", "mlp_dim", cfg.intermediate_size, 1, Config::kMaxSize);
  cfg.num_hidden_layers = pick("num_hidden_layers", "depth", cfg.num_hidden_layers, 1, 4096);
  cfg.num_attention_heads = pick("num_attention_heads", "heads", cfg.num_attention_heads, 1, 4096);
  cfg.patch_size = c.get_int("patch_size", cfg.patch_size, 1, 1024);
  cfg.layer_norm_eps = c.get_epsilon("layer_norm_eps", cfg.layer_norm_eps);
  cfg.hidden_act = c.get_string("hidden_act", cfg.hidden_act);
  cfg.pos_embed_antialias = c.get_bool("pos_embed_antialias", cfg.pos_embed_antialias);
  nn::parse_activation(cfg.hidden_act, c.where("hidden_act"));
  c.check(cfg.hidden_size % cfg.num_attention_heads == 0, "hidden_size",
          "a multiple of the head count " + std::to_string(cfg.num_attention_heads), std::to_string(cfg.hidden_size));
  return cfg;
}

struct SiglipViT::Block {
  nn::EncoderLayerWeights w;
};

SiglipViT::Layout SiglipViT::detect_layout(const WeightStore& store) {
  const std::vector<std::string> names = store.checkpoint().names();
  const std::string anchor = "patch_embed.proj.weight";
  Layout l;
  int found = 0;
  for (const auto& n : names)
    if (n.size() >= anchor.size() && n.compare(n.size() - anchor.size(), anchor.size(), anchor) == 0 &&
        (n.size() == anchor.size() || n[n.size() - anchor.size() - 1] == '.')) {
      l.prefix = n.substr(0, n.size() - anchor.size());
      ++found;
    }
  if (found != 1)
    throw Error("weights match no known SigLIP ViT layout", store.checkpoint().path(),
                "exactly one timm-style '[prefix.]patch_embed.proj.weight' with pos_embed and blocks.{i}.*",
                list_keys(names));
  auto has = [&](const std::string& k) { return store.contains(l.prefix + k); };
  if (has("blocks.0.attn.qkv.weight")) {
    l.fused_qkv = true;
  } else if (has("blocks.0.attn.q_proj.weight") && has("blocks.0.attn.k_proj.weight") &&
             has("blocks.0.attn.v_proj.weight")) {
    l.fused_qkv = false;
  } else {
    std::vector<std::string> block0;
    for (const auto& n : names)
      if (n.rfind(l.prefix + "blocks.0.", 0) == 0) block0.push_back(n);
    throw Error("ViT block 0 has neither a fused nor a split q/k/v projection", store.checkpoint().path(),
                "blocks.0.attn.qkv.{weight,bias} or blocks.0.attn.{q,k,v}_proj.{weight,bias}",
                block0.empty() ? "no blocks.0.* keys; keys: " + list_keys(names) : list_keys(block0));
  }
  l.final_norm = has("norm.weight");
  if (!has("pos_embed"))
    throw Error("ViT weights have no position table", store.checkpoint().path(), l.prefix + "pos_embed",
                list_keys(names));
  const auto& shape = store.info(l.prefix + "pos_embed").shape;
  const int64_t n = shape.size() == 3 && shape[0] == 1 ? shape[1] : -1;
  const int64_t g = n > 0 ? static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n)))) : 0;
  if (g <= 0 || g * g != n)
    throw Error("ViT position table is not a square grid", store.checkpoint().path() + ": " + l.prefix + "pos_embed",
                "[1, G*G, hidden]", shape_str(shape));
  l.pos_grid = g;
  return l;
}

SiglipViT::SiglipViT(WeightStore& store, const SiglipViTConfig& cfg) : cfg_(cfg), layout_(detect_layout(store)) {
  const int64_t d = cfg.hidden_size, p = cfg.patch_size, m = cfg.intermediate_size;
  WeightView w = store.root();
  if (!layout_.prefix.empty()) w = w.sub(layout_.prefix.substr(0, layout_.prefix.size() - 1));
  patch_w_ = w.get("patch_embed.proj.weight", {d, 3, p, p});
  patch_b_ = w.get("patch_embed.proj.bias", {d});
  pos_embed_ = w.get("pos_embed", {1, layout_.pos_grid * layout_.pos_grid, d});
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    WeightView b = w.sub("blocks").sub(i);
    auto blk = std::make_shared<Block>();
    nn::EncoderLayerWeights& e = blk->w;
    e.ln1_w = b.get("norm1.weight", {d});
    e.ln1_b = b.get("norm1.bias", {d});
    if (layout_.fused_qkv) {
      e.qkv = nn::Linear::load(b, "attn.qkv", d, 3 * d, b.contains("attn.qkv.bias"));
    } else {
      auto part = [&](const char* n) { return nn::Linear::load(b, n, d, d, b.contains(std::string(n) + ".bias")); };
      e.qkv = nn::Linear::fuse({part("attn.q_proj"), part("attn.k_proj"), part("attn.v_proj")});
    }
    e.out = nn::Linear::load(b, "attn.proj", d, d);
    e.ln2_w = b.get("norm2.weight", {d});
    e.ln2_b = b.get("norm2.bias", {d});
    e.fc1 = nn::Linear::load(b, "mlp.fc1", d, m);
    e.fc2 = nn::Linear::load(b, "mlp.fc2", m, d);
    blocks_.push_back(blk);
  }
  if (layout_.final_norm) {
    norm_w_ = w.get("norm.weight", {d});
    norm_b_ = w.get("norm.bias", {d});
  }
  // The MAP pooling head of a full SigLIP tower is not used for tokenisation.
  store.ignore_prefix(layout_.prefix + "attn_pool.");
  if (store.contains(layout_.prefix + "blocks." + std::to_string(cfg.num_hidden_layers) + ".norm1.weight"))
    throw Error("the checkpoint has more ViT blocks than the config", store.checkpoint().path(),
                std::to_string(cfg.num_hidden_layers) + " blocks (num_hidden_layers)",
                "a key " + layout_.prefix + "blocks." + std::to_string(cfg.num_hidden_layers) + ".*");
}

SiglipViT SiglipViT::load(const std::string& path, const RuntimeOptions& rt, const std::string& config_path) {
  auto c = find_config(path, config_path);
  SiglipViTConfig cfg = c ? SiglipViTConfig::from(*c) : SiglipViTConfig{};
  auto store = WeightStore::open(path, rt);
  SiglipViT m(*store, cfg);
  store->finish();
  return m;
}

at::Tensor SiglipViT::forward(const at::Tensor& pixels) const {
  const int64_t p = cfg_.patch_size, d = cfg_.hidden_size;
  if (pixels.dim() != 4 || pixels.size(1) != 3)
    throw Error("the ViT takes RGB images", "SiglipViT::forward", "[B, 3, H, W]", shape_str(pixels.sizes().vec()));
  if (pixels.size(2) < p || pixels.size(3) < p || pixels.size(2) % p != 0 || pixels.size(3) % p != 0)
    throw Error("image size is not a multiple of the patch size", "SiglipViT::forward",
                "H and W positive multiples of " + std::to_string(p), shape_str(pixels.sizes().vec()));
  const int64_t h = pixels.size(2) / p, w = pixels.size(3) / p;
  at::Tensor x = at::conv2d(pixels.to(patch_w_.options()), patch_w_, patch_b_, {p, p});  // [B, D, h, w]
  x = x.flatten(2).transpose(1, 2);                                                       // [B, h*w, D]
  // Learned table on a G x G grid, resized to (h, w) in fp32 (timm resample_abs_pos_embed).
  at::Tensor pos = pos_embed_;
  const int64_t g = layout_.pos_grid;
  if (h != g || w != g) {
    at::Tensor t = pos.to(at::kFloat).view({1, g, g, d}).permute({0, 3, 1, 2});  // [1, D, G, G]
    t = cfg_.pos_embed_antialias ? at::_upsample_bilinear2d_aa(t, {h, w}, /*align_corners=*/false)
                                 : at::upsample_bilinear2d(t, {h, w}, /*align_corners=*/false);
    pos = t.permute({0, 2, 3, 1}).reshape({1, h * w, d}).to(x.scalar_type());
  }
  x = x + pos;
  tap("inter_embeddings", x);
  nn::EncoderLayerOptions opt;
  opt.num_heads = cfg_.num_attention_heads;
  opt.eps = cfg_.layer_norm_eps;
  opt.act = nn::parse_activation(cfg_.hidden_act, "SiglipViT hidden_act");
  for (const auto& blk : blocks_) x = nn::encoder_layer(x, blk->w, opt);
  if (layout_.final_norm) x = nn::layer_norm(x, norm_w_, norm_b_, cfg_.layer_norm_eps);
  return x;
}

// ---- any-resolution preprocessing -------------------------------------------------------------------

AnyresTransform AnyresTransform::from(const Config& c) {
  AnyresTransform t;
  t.short_size = c.get_int("short_size", t.short_size, 1, 1 << 16);
  t.long_size = c.get_int("long_size", t.long_size, 1, 1 << 16);
  t.patch_size = c.get_int("patch_size", t.patch_size, 1, 1024);
  t.min_short_size = c.get_int("min_short_size", t.min_short_size, 0, 1 << 16);
  t.max_aspect_ratio = c.get_double("max_aspect_ratio", t.max_aspect_ratio, 1.0, 1e4);
  t.filtering = c.get_bool("filtering", t.filtering);
  if (c.has("random_ratio"))
    throw Error("random_ratio is a training-time augmentation", c.where("random_ratio"), "null or absent", "a value");
  c.check(t.long_size >= t.short_size, "long_size", ">= short_size " + std::to_string(t.short_size),
          std::to_string(t.long_size));
  c.check(t.short_size >= t.patch_size, "short_size", ">= patch_size " + std::to_string(t.patch_size),
          std::to_string(t.short_size));
  return t;
}

std::pair<int64_t, int64_t> anyres_target_size(int64_t width, int64_t height, const AnyresTransform& t) {
  const std::string where = "anyres preprocessing of a " + std::to_string(width) + "x" + std::to_string(height) + " image";
  if (width <= 0 || height <= 0) throw Error("empty image", where, "width, height > 0");
  const int64_t ss = std::min(width, height), ls = std::max(width, height);
  if (t.filtering && ss < t.min_short_size)
    throw Error("image too small: short side below min_short_size", where,
                "short side >= " + std::to_string(t.min_short_size), std::to_string(ss));
  const double aspect = static_cast<double>(ls) / static_cast<double>(ss);
  if (t.filtering && aspect > t.max_aspect_ratio)
    throw Error("image too elongated: aspect ratio above max_aspect_ratio", where,
                "long/short <= " + std::to_string(t.max_aspect_ratio), std::to_string(aspect));
  // Same float steps as the Python: scale up to short_size, then down to long_size.
  double tw = static_cast<double>(width), th = static_cast<double>(height);
  const double s0 = std::min(tw, th);
  if (s0 < t.short_size) {
    tw = tw * (t.short_size / s0);
    th = th * (t.short_size / s0);
  }
  const double l0 = std::max(tw, th);
  if (l0 > t.long_size) {
    tw = tw * (t.long_size / l0);
    th = th * (t.long_size / l0);
  }
  // Python round(): half to even (nearbyint under the default rounding mode).
  const auto snap = [&](double v) { return static_cast<int64_t>(std::nearbyint(v / t.patch_size)) * t.patch_size; };
  const int64_t ow = snap(tw), oh = snap(th);
  if (ow <= 0 || oh <= 0)
    throw Error("image rounds to an empty token grid", where, "at least one patch per side",
                std::to_string(ow) + "x" + std::to_string(oh));
  return {ow, oh};
}

at::Tensor anyres_preprocess(const Image& image, const AnyresTransform& t) {
  const int64_t want = int64_t(image.width) * image.height * 3;
  if (image.width <= 0 || image.height <= 0 || static_cast<int64_t>(image.rgb.size()) != want)
    throw Error("image is not 8-bit RGB", "anyres_preprocess",
                std::to_string(image.width) + "x" + std::to_string(image.height) + "x3 = " + std::to_string(want) + " bytes",
                std::to_string(image.rgb.size()) + " bytes" +
                    (image.rgb.size() * 3 == static_cast<size_t>(want) ? " (one channel: a grey image?)" : ""));
  auto [tw, th] = anyres_target_size(image.width, image.height, t);
  Image r = resize(image, static_cast<int>(tw), static_cast<int>(th), Resample::Bicubic);
  // torchvision ToTensor (float32 / 255) then Normalize(0.5, 0.5), both in float32.
  at::Tensor x = image_to_tensor(r).to(at::kFloat).div(255);
  x = (x - 0.5f) / 0.5f;
  return x.permute({2, 0, 1}).unsqueeze(0).contiguous();  // [1, 3, H, W]
}

SiglipVQTokenizer::SiglipVQTokenizer(SiglipViT vit, SiglipVQ vq, AnyresTransform transform)
    : vit_(std::move(vit)), vq_(std::move(vq)), transform_(transform) {
  if (vit_.config().hidden_size != vq_.config().z_channels)
    throw Error("the ViT width and the projector's z_channels differ", "SiglipVQTokenizer",
                std::to_string(vq_.config().z_channels), std::to_string(vit_.config().hidden_size));
  if (vit_.config().patch_size != transform_.patch_size)
    throw Error("the ViT patch size and the transform's patch_size differ", "SiglipVQTokenizer",
                std::to_string(transform_.patch_size), std::to_string(vit_.config().patch_size));
}

SiglipVQTokenizer::Tokens SiglipVQTokenizer::encode(const Image& image) const {
  at::Tensor x = anyres_preprocess(image, transform_);
  Tokens t;
  t.h = x.size(2) / transform_.patch_size;
  t.w = x.size(3) / transform_.patch_size;
  t.codes = vq_.encode(vit_.forward(x), t.h, t.w)[0].to(at::kCPU);
  return t;
}

}  // namespace omniflux
