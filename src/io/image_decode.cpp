// PNG, JPEG and WebP pixel decoding through libpng, libjpeg-turbo and libwebp (image_decode.h).
//
// libpng and libjpeg report fatal errors by longjmp, which must never cross a C++ frame that owns
// objects with destructors. So every setjmp below sits in a small function that holds only plain
// data (a *Job struct its caller owns) and calls nothing that throws; the C++ callers own the
// buffers and the cleanup, check the header between the two phases, and turn failures into Errors.
#include "io/image_decode.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <jpeglib.h>  // needs <cstdio> (FILE) first
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>

#include "io/image_check.h"
#include "omniflux/error.h"

// Pillow's JPEG pixels come from libjpeg-turbo; IJG libjpeg 7+ upsamples chroma differently.
#ifndef LIBJPEG_TURBO_VERSION
#error "omniflux needs libjpeg-turbo (libjpeg62-turbo-dev on Debian)"
#endif

namespace omniflux {
namespace detail {
namespace {

// ---------------------------------------------------------------- PNG

struct PngJob {
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  png_structp png = nullptr;
  png_infop info = nullptr;
  png_bytepp rows = nullptr;  // one pointer per output row, owned by the caller
  png_uint_32 width = 0, height = 0;
  int depth = 0, colour = 0;
  size_t rowbytes = 0;
  char message[256] = {};
};

void png_fail(png_structp png, png_const_charp msg) {
  auto* job = static_cast<PngJob*>(png_get_error_ptr(png));
  std::snprintf(job->message, sizeof(job->message), "%s", msg ? msg : "libpng error");
  png_longjmp(png, 1);
}

// libpng's warnings are benign problems (extra bytes after the pixel data, a bad ancillary
// chunk); Pillow decodes such files too.
void png_ignore_warning(png_structp, png_const_charp) {}

void png_read_bytes(png_structp png, png_bytep out, size_t n) {
  auto* job = static_cast<PngJob*>(png_get_io_ptr(png));
  if (job->size - job->pos < n) png_error(png, "the data ends early");
  std::memcpy(out, job->data + job->pos, n);
  job->pos += n;
}

// 16-bit grey opens in Pillow as mode I;16, whose convert("RGB") clips samples to 255; every other
// 16-bit type keeps the high byte (Pillow's ;16B unpackers).
bool png_clipped_grey16(const PngJob* job) {
  return job->colour == PNG_COLOR_TYPE_GRAY && job->depth == 16;
}

// Reads the chunks up to the first IDAT and sets the transforms to 8-bit RGB (or, for 16-bit
// grey, to big-endian 16-bit grey that the caller clips). False with job->message on an error.
bool png_begin(PngJob* job) {
  if (setjmp(png_jmpbuf(job->png))) return false;
  png_set_read_fn(job->png, job, png_read_bytes);
  png_set_user_limits(job->png, kMaxImageSide, kMaxImageSide);
  // Ancillary chunks (text, ICC profiles, EXIF, ...) do not change convert("RGB")'s pixels: skip
  // them unparsed. IHDR, PLTE, tRNS, IDAT and IEND are still read.
  png_set_keep_unknown_chunks(job->png, PNG_HANDLE_CHUNK_NEVER, nullptr, -1);
  png_read_info(job->png, job->info);
  job->width = png_get_image_width(job->png, job->info);
  job->height = png_get_image_height(job->png, job->info);
  job->depth = png_get_bit_depth(job->png, job->info);
  job->colour = png_get_color_type(job->png, job->info);
  if (!png_clipped_grey16(job)) {
    if (job->depth == 16) png_set_strip_16(job->png);  // the high byte
    if (job->colour == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(job->png);
    if ((job->colour & PNG_COLOR_MASK_COLOR) == 0) {
      if (job->depth < 8) png_set_expand_gray_1_2_4_to_8(job->png);
      png_set_gray_to_rgb(job->png);
    }
    // Alpha (and a palette's tRNS, which palette_to_rgb turns into alpha) is dropped, not
    // composited, like convert("RGB").
    png_set_strip_alpha(job->png);
  }
  png_set_interlace_handling(job->png);
  png_read_update_info(job->png, job->info);
  job->rowbytes = png_get_rowbytes(job->png, job->info);
  return true;
}

bool png_read_pixels(PngJob* job) {
  if (setjmp(png_jmpbuf(job->png))) return false;
  png_read_image(job->png, job->rows);
  png_read_end(job->png, nullptr);
  return true;
}

struct PngDestroy {
  void operator()(PngJob* job) const {
    png_destroy_read_struct(&job->png, job->info ? &job->info : nullptr, nullptr);
  }
};

// ---------------------------------------------------------------- JPEG

// A progressive JPEG may hold thousands of tiny scans, each a pass over the whole coefficient
// buffer: a CPU bomb. Real encoders write about ten; libjpeg-turbo's own tools cap it at 500.
constexpr int kMaxJpegScans = 500;

enum JpegFailure { kJpegOk, kJpegError, kJpegTruncated, kJpegCorrupt, kJpegTooManyScans };

struct JpegJob {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  int failure = kJpegOk;
  uint8_t* line = nullptr;  // one decoded scanline (width x components), owned by the caller
  uint8_t* out = nullptr;   // the RGB pixels, width x 3 per row, owned by the caller
  char message[JMSG_LENGTH_MAX + 64] = {};
};

[[noreturn]] void jpeg_stop(j_common_ptr cinfo, int failure) {
  auto* job = static_cast<JpegJob*>(cinfo->client_data);
  (*cinfo->err->format_message)(cinfo, job->message);
  job->failure = failure;
  std::longjmp(job->jump, 1);
}

void jpeg_fail(j_common_ptr cinfo) { jpeg_stop(cinfo, kJpegError); }

// Warnings (level -1). Data that runs out, and entropy-coded data the decoder had to guess
// around, are errors: the pixels would be partly grey or garbage. Pillow refuses truncation but
// decodes corrupt data; omniflux refuses both. The other warnings (an unknown JFIF revision or
// Adobe transform, stray bytes between markers, a bad ICC marker) leave the pixels exact.
void jpeg_note(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF: jpeg_stop(cinfo, kJpegTruncated);
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION: jpeg_stop(cinfo, kJpegCorrupt);
    default: break;
  }
}

void jpeg_quiet(j_common_ptr) {}  // libjpeg would print to stderr

void jpeg_check_scans(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxJpegScans) {
    auto* job = static_cast<JpegJob*>(cinfo->client_data);
    std::snprintf(job->message, sizeof(job->message), "more than %d scans", kMaxJpegScans);
    job->failure = kJpegTooManyScans;
    std::longjmp(job->jump, 1);
  }
}

// Reads the markers up to the first scan and chooses the output colour space: grey, RGB (from
// YCbCr or RGB) or CMYK (from CMYK or YCCK), as Pillow's modes L, RGB and CMYK.
bool jpeg_begin(JpegJob* job, const uint8_t* data, size_t size) {
  if (setjmp(job->jump)) return false;
  jpeg_create_decompress(&job->cinfo);
  job->cinfo.progress = &job->progress;
  jpeg_mem_src(&job->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&job->cinfo, TRUE);
  switch (job->cinfo.num_components) {
    case 1: job->cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: job->cinfo.out_color_space = JCS_RGB; break;
    case 4: job->cinfo.out_color_space = JCS_CMYK; break;
    default: return true;  // refused by the caller
  }
  // Pillow leaves both at libjpeg's defaults (it changes them only in draft mode): the accurate
  // integer IDCT and fancy (triangle-filter) chroma upsampling. Set explicitly, since the pixels
  // must equal Pillow's.
  job->cinfo.dct_method = JDCT_ISLOW;
  job->cinfo.do_fancy_upsampling = TRUE;
  jpeg_calc_output_dimensions(&job->cinfo);
  return true;
}

// Pillow's CMYK to RGB: JPEG CMYK is stored inverted (Adobe), which Pillow undoes when unpacking
// ("CMYK;I"); then each channel is (255 - k) - c * (255 - k) / 255, rounded as Pillow rounds.
uint8_t cmyk_channel(uint8_t stored_c, uint8_t stored_k) {
  const int c = 255 - stored_c, nk = stored_k;  // nk = 255 - k, and k = 255 - stored_k
  const int t = c * nk + 128;
  return static_cast<uint8_t>(nk - (((t >> 8) + t) >> 8));
}

void jpeg_to_rgb(const uint8_t* in, uint8_t* out, unsigned width, int components) {
  if (components == 3) {
    std::memcpy(out, in, size_t(width) * 3);
  } else if (components == 1) {
    for (unsigned x = 0; x < width; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
  } else {
    for (unsigned x = 0; x < width; ++x, in += 4, out += 3) {
      out[0] = cmyk_channel(in[0], in[3]);
      out[1] = cmyk_channel(in[1], in[3]);
      out[2] = cmyk_channel(in[2], in[3]);
    }
  }
}

bool jpeg_read_pixels(JpegJob* job) {
  if (setjmp(job->jump)) return false;
  jpeg_start_decompress(&job->cinfo);
  while (job->cinfo.output_scanline < job->cinfo.output_height) {
    JSAMPROW row = job->line;
    const size_t y = job->cinfo.output_scanline;
    if (jpeg_read_scanlines(&job->cinfo, &row, 1) != 1) {
      std::snprintf(job->message, sizeof(job->message), "the decoder stopped at row %zu", y);
      job->failure = kJpegError;
      return false;
    }
    jpeg_to_rgb(job->line, job->out + y * job->cinfo.output_width * 3, job->cinfo.output_width,
                job->cinfo.output_components);
  }
  jpeg_finish_decompress(&job->cinfo);
  return true;
}

struct JpegDestroy {
  void operator()(JpegJob* job) const { jpeg_destroy_decompress(&job->cinfo); }
};

// A JpegJob with its error handling installed; `guard` destroys it.
void jpeg_setup(JpegJob& job) {
  std::memset(&job.cinfo, 0, sizeof(job.cinfo));
  job.cinfo.err = jpeg_std_error(&job.err);
  job.err.error_exit = jpeg_fail;
  job.err.emit_message = jpeg_note;
  job.err.output_message = jpeg_quiet;
  job.cinfo.client_data = &job;  // kept by jpeg_create_decompress
  job.progress = {};
  job.progress.progress_monitor = jpeg_check_scans;
}

[[noreturn]] void jpeg_throw(const JpegJob& job, const std::string& name) {
  switch (job.failure) {
    case kJpegTruncated:
      throw Error("truncated JPEG", name, "complete image data", job.message);
    case kJpegCorrupt:
      throw Error("corrupt JPEG data", name, "valid entropy-coded data", job.message);
    case kJpegTooManyScans:
      throw Error("JPEG has too many scans", name,
                  "at most " + std::to_string(kMaxJpegScans) + " scans", job.message);
    default:
      throw Error("cannot decode JPEG", name, "valid JPEG data", job.message);
  }
}

// Runs the header phase and checks what it found; the caller destroys `job`.
void jpeg_header(JpegJob& job, const uint8_t* data, size_t size, const std::string& name) {
  if (!jpeg_begin(&job, data, size)) jpeg_throw(job, name);
  const int n = job.cinfo.num_components;
  if (n != 1 && n != 3 && n != 4) {
    throw Error("unsupported JPEG colour components", name, "1 (grey), 3 (YCbCr/RGB) or 4 (CMYK)",
                std::to_string(n));
  }
  check_image_size(job.cinfo.image_width, job.cinfo.image_height, name, "image");
  if (job.cinfo.output_width != job.cinfo.image_width ||
      job.cinfo.output_height != job.cinfo.image_height || job.cinfo.output_components != n) {
    throw Error("unexpected JPEG output layout", name,
                size_str(job.cinfo.image_width, job.cinfo.image_height) + "x" + std::to_string(n),
                size_str(job.cinfo.output_width, job.cinfo.output_height) + "x" +
                    std::to_string(job.cinfo.output_components));
  }
}

// ---------------------------------------------------------------- WebP

std::string webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "an unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the data ends early";
    default: return "status " + std::to_string(int(s));
  }
}

[[noreturn]] void webp_throw(VP8StatusCode s, const std::string& name) {
  if (s == VP8_STATUS_NOT_ENOUGH_DATA) {
    throw Error("truncated WebP", name, "complete image data", webp_status(s));
  }
  throw Error("cannot decode WebP", name, "valid WebP data", webp_status(s));
}

WebPBitstreamFeatures webp_features(const uint8_t* data, size_t size, const std::string& name) {
  WebPBitstreamFeatures f;
  const VP8StatusCode s = WebPGetFeatures(data, size, &f);
  if (s != VP8_STATUS_OK) webp_throw(s, name);
  // Pillow would give the first frame composed on the canvas; an animation is refused here, as
  // GIF is.
  if (f.has_animation) {
    throw Error("animated WebP is not accepted", name, "a still PNG, JPEG or WebP image",
                "an animation");
  }
  check_image_size(f.width, f.height, name, "image");
  return f;
}

}  // namespace

Image decode_png(const uint8_t* data, size_t size, const std::string& name) {
  PngJob job;
  job.data = data;
  job.size = size;
  job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, png_fail, png_ignore_warning);
  if (!job.png) throw Error("cannot decode PNG", name, "libpng to start", "out of memory");
  const std::unique_ptr<PngJob, PngDestroy> guard(&job);
  job.info = png_create_info_struct(job.png);
  if (!job.info) throw Error("cannot decode PNG", name, "libpng to start", "out of memory");
  if (!png_begin(&job)) throw Error("cannot decode PNG", name, "valid PNG data", job.message);
  check_image_size(job.width, job.height, name, "image");

  const size_t w = job.width, h = job.height;
  const bool grey16 = png_clipped_grey16(&job);
  if (job.rowbytes != (grey16 ? 2 : 3) * w) {
    throw Error("unexpected PNG row layout", name, std::to_string((grey16 ? 2 : 3) * w) + " bytes",
                std::to_string(job.rowbytes) + " bytes");
  }
  Image image;
  image.width = int(w);
  image.height = int(h);
  image.rgb.resize(w * h * 3);
  // libpng writes straight into the RGB rows (16-bit grey: into the first 2w bytes of each).
  std::vector<png_bytep> rows(h);
  for (size_t y = 0; y < h; ++y) rows[y] = image.rgb.data() + y * w * 3;
  job.rows = rows.data();
  if (!png_read_pixels(&job)) throw Error("cannot decode PNG", name, "valid PNG data", job.message);
  if (grey16) {
    // In place, right to left: pixel x is read from bytes 2x, 2x+1 before bytes 3x..3x+2 (never
    // below 2x) are written.
    for (size_t y = 0; y < h; ++y) {
      uint8_t* p = rows[y];
      for (size_t x = w; x-- > 0;) {
        const unsigned v = (unsigned(p[2 * x]) << 8) | p[2 * x + 1];
        p[3 * x] = p[3 * x + 1] = p[3 * x + 2] = uint8_t(v > 255 ? 255 : v);
      }
    }
  }
  return image;
}

std::pair<int, int> jpeg_size(const uint8_t* data, size_t size, const std::string& name) {
  JpegJob job;
  jpeg_setup(job);
  const std::unique_ptr<JpegJob, JpegDestroy> guard(&job);
  jpeg_header(job, data, size, name);
  return {int(job.cinfo.image_width), int(job.cinfo.image_height)};
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  JpegJob job;
  jpeg_setup(job);
  const std::unique_ptr<JpegJob, JpegDestroy> guard(&job);
  jpeg_header(job, data, size, name);
  const size_t w = job.cinfo.output_width, h = job.cinfo.output_height;
  Image image;
  image.width = int(w);
  image.height = int(h);
  image.rgb.resize(w * h * 3);
  std::vector<uint8_t> line(w * size_t(job.cinfo.output_components));
  job.line = line.data();
  job.out = image.rgb.data();
  if (!jpeg_read_pixels(&job)) jpeg_throw(job, name);
  return image;
}

std::pair<int, int> webp_size(const uint8_t* data, size_t size, const std::string& name) {
  const WebPBitstreamFeatures f = webp_features(data, size, name);
  return {f.width, f.height};
}

Image decode_webp(const uint8_t* data, size_t size, const std::string& name) {
  const WebPBitstreamFeatures f = webp_features(data, size, name);
  Image image;
  image.width = f.width;
  image.height = f.height;
  image.rgb.resize(size_t(f.width) * size_t(f.height) * 3);
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) {
    throw Error("cannot decode WebP", name, "a libwebp matching its headers", "a version mismatch");
  }
  // Default options (fancy upsampling, no dithering), as Pillow's WebPAnimDecoder uses them;
  // Pillow asks for RGBA and convert("RGB") drops the alpha, which leaves the same RGB bytes.
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = image.rgb.data();
  config.output.u.RGBA.stride = f.width * 3;
  config.output.u.RGBA.size = image.rgb.size();
  const VP8StatusCode s = WebPDecode(data, size, &config);
  WebPFreeDecBuffer(&config.output);  // nothing to free with external memory; kept for symmetry
  if (s != VP8_STATUS_OK) webp_throw(s, name);
  return image;
}

}  // namespace detail
}  // namespace omniflux
