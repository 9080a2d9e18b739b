// The stb_image / stb_image_write implementations omniflux uses, compiled here from libstb-dev's
// headers (Debian's libstb.so is not linked).
//
// Hidden visibility: the stbi_* symbols stay inside libomniflux.so, so an application that carries
// its own (possibly different) stb copy does not get ours interposed, or the other way round.
#define STBIDEF extern __attribute__((visibility("hidden")))
#define STBIWDEF extern __attribute__((visibility("hidden")))

// Radiance HDR would be tone-mapped to 8 bits behind the caller's back, and Softimage PIC is not a
// format PIL reads; both are left out so such files fail as unknown formats.
#define STBI_NO_HDR
#define STBI_NO_PIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
