/* Writes tests/fixtures/images/formats/many_scans.jpg: a valid 8x8 greyscale progressive JPEG with
 * 505 scans (one DC scan, then each of the 63 AC coefficients in its own scan with 7 successive-
 * approximation refinements), over decode_image's limit of 500 scans. Every scan is legal, so
 * libjpeg decodes it without a warning (Pillow too): only the scan limit refuses it. Arithmetic
 * coding keeps it small.
 *
 *   cc tests/tools/make_many_scans_jpeg.c -ljpeg -o /tmp/many_scans && /tmp/many_scans OUT.jpg
 */
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUT.jpg\n", argv[0]);
    return 2;
  }
  FILE* f = fopen(argv[1], "wb");
  if (!f) return 1;
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = 8;
  c.image_height = 8;
  c.input_components = 1;
  c.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  c.arith_code = TRUE; /* no Huffman table per scan: a smaller file */

  static jpeg_scan_info scans[1 + 63 * 8];
  int n = 0;
  scans[n++] = (jpeg_scan_info){1, {0}, 0, 0, 0, 0};  /* DC, full precision */
  for (int k = 1; k < 64; ++k) {
    scans[n++] = (jpeg_scan_info){1, {0}, k, k, 0, 7};  /* first pass: bits 7 and up */
    for (int al = 6; al >= 0; --al) scans[n++] = (jpeg_scan_info){1, {0}, k, k, al + 1, al};
  }
  c.scan_info = scans;
  c.num_scans = n;

  jpeg_start_compress(&c, TRUE);
  JSAMPLE row[8];
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) row[x] = (JSAMPLE)((x * 37 + y * 91) & 0xFF);
    JSAMPROW p = row;
    jpeg_write_scanlines(&c, &p, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  fclose(f);
  printf("%d scans\n", n);
  return 0;
}
