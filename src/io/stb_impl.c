// The stb_image_write implementation omniflux uses (the PNG writer), compiled here from
// libstb-dev's header (Debian's libstb.so is not linked). Decoding does not use stb: see
// image_decode.cpp.
//
// Hidden visibility: the stbi_* symbols stay inside libomniflux.so, so an application that carries
// its own (possibly different) stb copy does not get ours interposed, or the other way round.
#define STBIWDEF extern __attribute__((visibility("hidden")))

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
