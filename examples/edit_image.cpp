// Embedding omniflux: edit a picture with UniWorld-V1 in a few lines.
//   omniflux-example-edit_image UNIWORLD_DIR FLUX_DIR SIGLIP_DIR IN.png "Make it snow." OUT.png
#include <cstdio>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/uniworld.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s UNIWORLD_DIR FLUX_DIR SIGLIP_DIR IN.png PROMPT OUT.png\n", argv[0]);
    return 2;
  }
  try {
    omniflux::RuntimeOptions rt;  // rt.device = "cuda" runs in bf16 on the GPU
    auto pipe = omniflux::UniWorldPipeline::load(argv[1], argv[2], argv[3], rt);
    omniflux::UniWorldOptions opt;  // defaults from the official scripts: 28 steps, guidance 3.5
    opt.prompt = argv[5];
    opt.images = {omniflux::load_image(argv[4])};
    opt.task = omniflux::UniWorldTask::Image;
    auto result = pipe.run(opt, [](const std::string& stage, int64_t step, int64_t total) {
      std::fprintf(stderr, "%s %lld/%lld\n", stage.c_str(), (long long)step, (long long)total);
      return true;  // false cancels
    });
    if (!result) return 130;
    omniflux::save_png(argv[6], std::get<omniflux::Image>(*result));  // task Image: never text
  } catch (const omniflux::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
