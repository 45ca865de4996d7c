// image.h: image file I/O through stb (one implementation file, stb_impl.c).
#pragma once
#include <stdint.h>

// The largest image image_load decodes, in pixels (8192 x 8192).
#define IMAGE_MAX_PIXELS ((int64_t)1 << 26)
// Decodes a PNG/JPEG/BMP file into 8-bit pixels, HWC interleaved, with
// `channels` channels (1 grey or 3 RGB; stb converts). Returns NULL and
// sets *why to a short reason on failure (also for a path that is not a
// regular file: a FIFO would never end). Free with image_free().
uint8_t *image_load(const char *path, int channels, int *w, int *h, const char **why);
void image_free(uint8_t *pixels);
// Reads only the header, with image_load's checks of it: 0 and the size when
// stb knows the format and the image is within IMAGE_MAX_PIXELS, else -1
// with *why set. A file that passes may still fail to decode (truncated).
int image_info(const char *path, int *w, int *h, const char **why);
// Resizes (w, h) to cover size x size on its shorter side, then crops the
// centre: out (size, size, channels) HWC.
void image_resize_crop(uint8_t *out, const uint8_t *in, int w, int h,
                       int channels, int size);
// Writes an 8-bit HWC PNG atomically. -1 with a message naming the path.
int png_write(const char *path, const uint8_t *pixels, int w, int h, int channels);
// The most images one grid PNG holds: the grid and its images are in memory
// at once, so a program drawing more writes one PNG per image instead.
#define GRID_MAX_IMAGES 4096
// Float images (B, C, H, W) in [-1, 1], B <= GRID_MAX_IMAGES -> a grid PNG
// with `cols` columns and a 2-pixel gap; pixels: clamp to [-1, 1],
// round((x + 1) * 127.5).
int png_write_grid(const char *path, const float *images, int B, int C, int H,
                   int W, int cols);
// The pixel rule: x in [-1, 1] -> round((x + 1) * 127.5) (NaN -> 0).
uint8_t image_pixel_u8(float x);
// One float image (C, H, W) in [-1, 1] -> 8-bit HWC, same pixel rule.
void image_to_u8(uint8_t *out, const float *img, int C, int H, int W);
