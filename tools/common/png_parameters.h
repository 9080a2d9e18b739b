#pragma once
// The "parameters" text chunk of every PNG the shipped programs write (the CLIs and the server), as
// Stable Diffusion front-ends read it: the prompt, then the settings on one line. `model` names the
// model (the CLIs add its folder; the server does not show paths), `software` the program.
#include <cstdint>
#include <string>

#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"

namespace omniflux::cli {

// width x height: the output size the pipeline chose (edits snap to the references' ratio).
std::string uniworld_parameters(const UniWorldOptions& o, int64_t width, int64_t height, const std::string& model,
                                const std::string& software);
std::string flux_parameters(const FluxOptions& o, const std::string& model, const std::string& software);
// with_lm: the codes were sampled here (generate), so the LM's settings are part of the picture.
std::string xomni_parameters(const XOmniCodes& codes, const XOmniOptions& o,
                             const XOmniPipeline& pipeline, bool with_lm, const std::string& model,
                             const std::string& software);

}  // namespace omniflux::cli
