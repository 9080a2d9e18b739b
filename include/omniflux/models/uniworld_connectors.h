#pragma once
// UniWorld-V1 connectors (docs/models/uniworld.md §2): the two MLPs of UnivaDenoiseTower that map the
// VLM's last hidden states and the SigLIP features into FLUX's text width, the exact assembly of
// FLUX's text stream (§2.1), and the task-routing head of app.py (§1.5, §3.4).
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "omniflux/io/weights.h"
#include "omniflux/runtime.h"

namespace omniflux {

// Linear(in -> hidden), SiLU, Linear(hidden -> out): keys `.0.weight/.0.bias`, `.2.weight/.2.bias`.
// The config says "mlp2x_gelu" but the activation is SiLU (uniworld.md §2); there is no norm.
class UniWorldProjector {
 public:
  UniWorldProjector() = default;
  // in_dim / out_dim < 0: read from the weights. The hidden width is read from the weights
  // (official: 3 * output_hidden_size).
  UniWorldProjector(const WeightView& w, int64_t in_dim, int64_t out_dim);
  at::Tensor forward(const at::Tensor& x) const;  // [..., in] -> [..., out]
  int64_t in_dim() const { return w0_.size(1); }
  int64_t out_dim() const { return w2_.size(0); }

 private:
  at::Tensor w0_, b0_, w2_, b2_;
};

// denoise_tower.denoise_projector and denoise_tower.siglip_projector (vae_projector is unused at
// inference, the caller marks it ignorable).
struct UniWorldConnectors {
  UniWorldProjector denoise_projector;  // VLM hidden (3584) -> FLUX joint dim (4096)
  UniWorldProjector siglip_projector;   // SigLIP hidden (1152) -> FLUX joint dim (4096)

  // `denoise_tower` is the view of the prefix "denoise_tower". vlm_hidden / out_dim as in the
  // config (input_hidden_size, output_hidden_size); siglip_hidden < 0 reads it from the weights.
  static UniWorldConnectors load(const WeightView& denoise_tower, int64_t vlm_hidden, int64_t out_dim,
                         int64_t siglip_hidden = -1);
};

struct UniWorldTextStream {
  at::Tensor prompt_embeds;         // [1, L + n_img * S + T, D] FLUX encoder_hidden_states
  at::Tensor txt_ids;               // [rows, 3] float zeros (FLUX text ids)
  at::Tensor vision_end_positions;  // [n_img] int64: the j-th image_end_token_id in input_ids
  at::Tensor row_source;            // [rows, 2] int64 (kind, row): 0 VLM row, 1 SigLIP row
                                    // (image * S + token), 2 T5 row
};

// uniworld.md §2.1: every image's projected SigLIP rows go immediately BEFORE its <|vision_end|> row
// (kept); the T5 rows (when defined) are appended at the end (app.py / eval order).
//   input_ids [1, L] int64; vlm_projected [1, L, D]; siglip_projected [n_img, S, D] or undefined
//   (no image); t5 [1, T, D] or undefined (T5 off).
// Throws Error when the number of image_end_token_id tokens differs from n_img.
UniWorldTextStream uniworld_assemble_text_stream(const at::Tensor& input_ids, const at::Tensor& vlm_projected,
                                const at::Tensor& siglip_projected, const at::Tensor& t5, int64_t image_end_token_id);

// app.py task_head: Linear(hidden, 10240), SiLU, Dropout, Linear(10240, 2), fp32. Keys 0.weight,
// 0.bias, 3.weight, 3.bias, from task_head_final.pt (a torch.save zip) or a safetensors copy.
class UniWorldTaskHead {
 public:
  UniWorldTaskHead() = default;
  static UniWorldTaskHead load(const std::string& file, int64_t hidden_size, const RuntimeOptions& rt = {});
  // h [..., hidden] (cast to fp32) -> logits [..., 2].
  at::Tensor forward(const at::Tensor& h) const;
  // app.py: generate an image iff logit[0] < logit[1]. h is one hidden state [hidden].
  bool wants_image(const at::Tensor& h) const;

 private:
  at::Tensor w0_, b0_, w3_, b3_;
};

}  // namespace omniflux
