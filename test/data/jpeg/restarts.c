// test/data/jpeg/restarts.jpg and arithmetic.jpg: 384x288 sequential JPEGs (a gradient with noise) with a
// restart marker after every row of MCUs, and arithmetic-coded with one after every two rows: entropy-coded
// data that the JPEG fast path's input thread decodes through libjpeg's restart and arithmetic decoders.
// Built with Debian's libjpeg-turbo 2.1.5:
//   gcc restarts.c -o restarts -ljpeg && ./restarts restarts.jpg arithmetic.jpg
#include <stdio.h>
#include <stdlib.h>

// After stdio.h: jpeglib.h needs FILE and size_t.
#include <jpeglib.h>

static void writeJpeg(const char* path, int restartRows, int arithmetic) {
  enum { kWidth = 384, kHeight = 288 };
  static unsigned char rgb[kWidth * kHeight * 3];
  unsigned state = 12345;
  for (int y = 0; y < kHeight; y++) {
    for (int x = 0; x < kWidth; x++) {
      state = state * 1103515245u + 12345u;
      const int noise = (int)((state >> 16) & 31) - 16;
      unsigned char* p = rgb + (y * kWidth + x) * 3;
      const int v[3] = {x * 255 / kWidth + noise, y * 255 / kHeight + noise, (x + y) * 255 / (kWidth + kHeight)};
      for (int c = 0; c < 3; c++) p[c] = (unsigned char)(v[c] < 0 ? 0 : v[c] > 255 ? 255 : v[c]);
    }
  }
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  FILE* f = fopen(path, "wb");
  jpeg_stdio_dest(&c, f);
  c.image_width = kWidth;
  c.image_height = kHeight;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 85, TRUE);
  c.restart_in_rows = restartRows;
  c.arith_code = arithmetic;
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = rgb + c.next_scanline * kWidth * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  writeJpeg(argv[1], 1, 0);
  writeJpeg(argv[2], 2, 1);
  return 0;
}
