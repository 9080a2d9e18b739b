// UniWorld-V1 connectors, after univa/models/modeling_univa_denoise_tower.py (UnivaDenoiseTower),
// modeling_univa_qwen2p5vl.py (_insert_img_to_vlm, output_type="denoise_embeds") and app.py
// (task_head, the [VLM, T5] concatenation). docs/models/uniworld.md §1.5, §2.
#include "omniflux/models/uniworld_connectors.h"

#include <filesystem>
#include <vector>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "omniflux/io/safetensors.h"
#include "io/torch_pickle.h"
#include "nn/debug.h"
#include "nn/ops.h"

namespace omniflux {

UniWorldProjector::UniWorldProjector(const WeightView& w, int64_t in_dim, int64_t out_dim) {
  // The hidden width is hard-coded in the official code (4096 * 3); read it from the weights.
  const WeightStore& s = w.store();
  const auto& info0 = s.info(w.key("0.weight"));
  if (info0.shape.size() != 2)
    throw Error("projector weight is not a matrix", w.key("0.weight"), "[hidden, in]", shape_str(info0.shape));
  const int64_t hidden = info0.shape[0];
  w0_ = w.get("0.weight", {hidden, in_dim});
  b0_ = w.get("0.bias", {hidden});
  w2_ = w.get("2.weight", {out_dim, hidden});
  b2_ = w.get("2.bias", {w2_.size(0)});
}

at::Tensor UniWorldProjector::forward(const at::Tensor& x) const {
  if (x.dim() < 1 || x.size(-1) != in_dim())
    throw Error("projector input has the wrong width", "UniWorldProjector", "[..., " + std::to_string(in_dim()) + "]",
                shape_str(x.sizes().vec()));
  // Inputs may come from another device (a stage run on its own, SigLIP placed elsewhere).
  return nn::linear(nn::silu(nn::linear(x.to(w0_.device(), w0_.scalar_type()), w0_, b0_)), w2_, b2_);
}

UniWorldConnectors UniWorldConnectors::load(const WeightView& dt, int64_t vlm_hidden, int64_t out_dim, int64_t siglip_hidden) {
  UniWorldConnectors c;
  c.denoise_projector = UniWorldProjector(dt.sub("denoise_projector"), vlm_hidden, out_dim);
  c.siglip_projector = UniWorldProjector(dt.sub("siglip_projector"), siglip_hidden, out_dim);
  return c;
}

UniWorldTextStream uniworld_assemble_text_stream(const at::Tensor& input_ids, const at::Tensor& vlm, const at::Tensor& sig,
                                const at::Tensor& t5, int64_t image_end_token_id) {
  const std::string where = "uniworld_assemble_text_stream";
  if (input_ids.dim() != 2 || input_ids.size(0) != 1 || input_ids.is_floating_point())
    throw Error("input_ids must be one integer row", where, "[1, L]", shape_str(input_ids.sizes().vec()));
  const int64_t L = input_ids.size(1);
  if (vlm.dim() != 3 || vlm.size(0) != 1 || vlm.size(1) != L)
    throw Error("projected VLM states do not match input_ids", where, "[1, " + std::to_string(L) + ", D]",
                shape_str(vlm.sizes().vec()));
  const int64_t D = vlm.size(2);
  const int64_t n_img = sig.defined() ? sig.size(0) : 0;
  if (sig.defined() && (sig.dim() != 3 || sig.size(2) != D))
    throw Error("projected SigLIP features have the wrong shape", where, "[n_img, S, " + std::to_string(D) + "]",
                shape_str(sig.sizes().vec()));
  if (t5.defined() && (t5.dim() != 3 || t5.size(0) != 1 || t5.size(2) != D))
    throw Error("T5 embeddings have the wrong shape", where, "[1, T, " + std::to_string(D) + "]",
                shape_str(t5.sizes().vec()));

  at::Tensor ids = input_ids.to(at::kCPU, at::kLong).contiguous();
  std::vector<int64_t> ends;
  const int64_t* p = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < L; ++i)
    if (p[i] == image_end_token_id) ends.push_back(i);
  // modeling_univa_qwen2p5vl.py asserts one <|vision_end|> per SigLIP image.
  if (static_cast<int64_t>(ends.size()) != n_img)
    throw Error("the prompt's <|vision_end|> tokens and the SigLIP images differ in number", where,
                std::to_string(n_img) + " (one per reference image)", std::to_string(ends.size()));

  const int64_t S = n_img > 0 ? sig.size(1) : 0, T = t5.defined() ? t5.size(1) : 0;
  std::vector<at::Tensor> parts;
  std::vector<int64_t> src;  // (kind, row) pairs
  auto take = [&](int kind, int64_t from, int64_t to) {
    for (int64_t r = from; r < to; ++r) src.insert(src.end(), {kind, r});
  };
  int64_t start = 0;
  for (int64_t j = 0; j < n_img; ++j) {
    parts.push_back(vlm.slice(1, start, ends[j]));
    take(0, start, ends[j]);
    parts.push_back(sig[j].unsqueeze(0).to(vlm.device(), vlm.scalar_type()));
    take(1, j * S, (j + 1) * S);
    start = ends[j];  // the <|vision_end|> row itself stays, after the image's SigLIP rows
  }
  parts.push_back(vlm.slice(1, start, L));
  take(0, start, L);
  if (T > 0) {
    parts.push_back(t5.to(vlm.device(), vlm.scalar_type()));
    take(2, 0, T);
  }
  UniWorldTextStream out;
  out.prompt_embeds = at::cat(parts, 1);
  const int64_t rows = out.prompt_embeds.size(1);
  out.txt_ids = at::zeros({rows, 3}, at::kFloat);  // flux_pipeline.py: text ids are all zero
  out.vision_end_positions = at::tensor(ends, at::kLong);
  out.row_source = at::tensor(src, at::kLong).reshape({rows, 2});
  return out;
}

UniWorldTaskHead UniWorldTaskHead::load(const std::string& file, int64_t hidden, const RuntimeOptions& rt) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw Error("task head file not found", file, "task_head_final.pt (torch.save) or a .safetensors copy", "missing");
  std::map<std::string, at::Tensor> sd;
  const bool st = file.size() >= 12 && file.compare(file.size() - 12, 12, ".safetensors") == 0;
  if (st) {
    auto f = SafetensorsFile::open(file);
    for (const auto& info : f.tensors()) sd[info.name] = f.get(info.name);
  } else {
    sd = load_torch_state_dict(file);
  }
  auto get = [&](const std::string& k, std::vector<int64_t> shape) {
    auto it = sd.find(k);
    if (it == sd.end()) throw Error("task head tensor missing", file + ": " + k, "keys 0.weight, 0.bias, 3.weight, 3.bias", "absent");
    const at::Tensor t = it->second;
    if (!t.is_floating_point() || t.dim() != static_cast<int64_t>(shape.size()))
      throw Error("task head tensor has the wrong shape", file + ": " + k, shape_str(shape), shape_str(t.sizes().vec()));
    for (size_t i = 0; i < shape.size(); ++i)
      if (shape[i] >= 0 && t.size(i) != shape[i])
        throw Error("task head tensor has the wrong shape", file + ": " + k, shape_str(shape), shape_str(t.sizes().vec()));
    sd.erase(it);
    // app.py keeps the head in fp32 whatever the rest runs in.
    return t.to(rt.torch_device(), at::kFloat);
  };
  UniWorldTaskHead h;
  h.w0_ = get("0.weight", {-1, hidden});
  h.b0_ = get("0.bias", {h.w0_.size(0)});
  h.w3_ = get("3.weight", {2, h.w0_.size(0)});
  h.b3_ = get("3.bias", {2});
  if (!sd.empty()) throw Error("task head file has unexpected tensors", file, "0.weight, 0.bias, 3.weight, 3.bias", sd.begin()->first);
  return h;
}

at::Tensor UniWorldTaskHead::forward(const at::Tensor& h) const {
  if (!w0_.defined()) throw Error("task head not loaded", "UniWorldTaskHead::forward");
  if (h.dim() < 1 || h.size(-1) != w0_.size(1))
    throw Error("task head input has the wrong width", "UniWorldTaskHead::forward",
                "[..., " + std::to_string(w0_.size(1)) + "]", shape_str(h.sizes().vec()));
  // Linear, SiLU, Dropout (identity in eval), Linear
  return nn::linear(nn::silu(nn::linear(h.to(w0_.device(), at::kFloat), w0_, b0_)), w3_, b3_);
}

bool UniWorldTaskHead::wants_image(const at::Tensor& h) const {
  at::Tensor l = forward(h.reshape({-1})).cpu();
  tap("uniworld.task_logits", l);
  return l[0].item<float>() < l[1].item<float>();
}

}  // namespace omniflux
