// test/data/jpeg/many-scans.jpg: a 64x64 progressive JPEG with one scan per component and AC coefficient
// in two successive-approximation passes (Al 1, then the refinement) after one DC scan: 379 valid scans.
// Built with Debian's libjpeg-turbo 2.1.5:
//   gcc many-scans.c -o many-scans -ljpeg && ./many-scans many-scans.jpg
#include <stdio.h>
#include <stdlib.h>

// After stdio.h: jpeglib.h needs FILE and size_t.
#include <jpeglib.h>
int main(int argc, char** argv) {
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  FILE* f = fopen(argv[1], "wb");
  jpeg_stdio_dest(&c, f);
  c.image_width = 64;
  c.image_height = 64;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 90, TRUE);
  static jpeg_scan_info scans[400];
  int n = 0;
  scans[n].comps_in_scan = 3;
  for (int k = 0; k < 3; k++) scans[n].component_index[k] = k;
  scans[n].Ss = 0;
  scans[n].Se = 0;
  scans[n].Ah = 0;
  scans[n].Al = 0;
  n++;
  for (int pass = 0; pass < 2; pass++)
    for (int comp = 0; comp < 3; comp++)
      for (int k = 1; k < 64; k++) {
        scans[n].comps_in_scan = 1;
        scans[n].component_index[0] = comp;
        scans[n].Ss = k;
        scans[n].Se = k;
        scans[n].Ah = pass == 0 ? 0 : 1;
        scans[n].Al = pass == 0 ? 1 : 0;
        n++;
      }
  c.scan_info = scans;
  c.num_scans = n;
  jpeg_start_compress(&c, TRUE);
  unsigned char row[64 * 3];
  while (c.next_scanline < 64) {
    for (int x = 0; x < 64; x++) {
      row[x * 3] = (x * 4) & 255;
      row[x * 3 + 1] = (c.next_scanline * 4) & 255;
      row[x * 3 + 2] = ((x ^ c.next_scanline) * 7) & 255;
    }
    JSAMPROW r = row;
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  fclose(f);
  printf("%d scans\n", n);
  return 0;
}
