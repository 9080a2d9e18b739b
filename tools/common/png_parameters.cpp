#include "png_parameters.h"

#include <sstream>

namespace omniflux::cli {

std::string uniworld_parameters(const UniWorldOptions& o, int64_t width, int64_t height, const std::string& model,
                                const std::string& software) {
  std::ostringstream s;
  s << o.prompt << "\n"
    << "Steps: " << o.steps << ", Guidance: " << o.guidance << ", Seed: " << o.seed << ", Size: " << width << "x"
    << height << ", T5: " << (o.use_t5 ? "on" : "off") << ", Reference images: " << o.images.size()
    << ", Model: " << model << ", Sampler: flow-match Euler, Software: " << software;
  return s.str();
}

std::string flux_parameters(const FluxOptions& o, const std::string& model, const std::string& software) {
  std::ostringstream s;
  s << o.prompt << "\n";
  if (o.negative_prompt) s << "Negative prompt: " << *o.negative_prompt << "\n";
  s << "Steps: " << o.steps << ", Guidance: " << o.guidance << ", True CFG: " << o.true_cfg_scale << ", Seed: " << o.seed
    << ", Size: " << o.width << "x" << o.height << ", Max sequence length: " << o.max_sequence_length
    << ", Model: " << model << ", Sampler: flow-match Euler, Software: " << software;
  return s.str();
}

std::string xomni_parameters(const XOmniCodes& c, const XOmniOptions& o, const XOmniPipeline& p,
                             bool with_lm, const std::string& model, const std::string& software) {
  std::ostringstream s;
  s << c.prompt << "\n";
  if (with_lm && !o.negative_prompt.empty()) s << "Negative prompt: " << o.negative_prompt << "\n";
  if (with_lm) {
    const auto sm = p.effective_sampling(o);
    s << "LM: cfg " << o.cfg_scale << ", temperature " << sm.temperature << ", top_k " << sm.top_k << ", top_p "
      << sm.top_p << ", min_p " << sm.min_p << ", seed " << o.seed << "; ";
  }
  const auto& d = p.vision_config().decoder;
  s << "Decoder: steps " << o.decoder.steps.value_or(d.num_inference_steps) << ", cfg "
    << o.decoder.cfg_scale.value_or(d.cfg_scale) << ", cfg_2 " << o.decoder.cfg_scale_2.value_or(d.cfg_scale_2)
    << ", seed " << o.decoder.seed << ", Grid: " << c.rows << "x" << c.cols << ", Model: " << model
    << ", Software: " << software;
  return s.str();
}

}  // namespace omniflux::cli
