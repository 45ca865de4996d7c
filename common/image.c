#include "image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>

#include "common.h"
#include "paths.h"

// Reads the header of an open image file and leaves the position where it
// was. 1: stb knows the format; 0: it does not (stb says why). -1: the
// header claims more than IMAGE_MAX_PIXELS; *why says so.
static int read_header(FILE *f, int *w, int *h, const char **why) {
    int in_ch = 0;
    if (!stbi_info_from_file(f, w, h, &in_ch)) return 0;
    if ((int64_t)*w * *h <= IMAGE_MAX_PIXELS) return 1;
    static _Thread_local char msg[96];
    snprintf(msg, sizeof msg, "%d x %d pixels, more than the %lld an image may have",
             *w, *h, (long long)IMAGE_MAX_PIXELS);
    if (why) *why = msg;
    return -1;
}

int image_info(const char *path, int *w, int *h, const char **why) {
    FILE *f = fopen_regular(path, why);
    if (!f) return -1;
    int rc = read_header(f, w, h, why);
    fclose(f);
    if (rc == 0) {
        const char *r = stbi_failure_reason();
        if (why) *why = r ? r : "unknown image format";
    }
    return rc == 1 ? 0 : -1;
}

uint8_t *image_load(const char *path, int channels, int *w, int *h, const char **why) {
    CHECK(channels == 1 || channels == 3);
    FILE *f = fopen_regular(path, why);
    if (!f) return NULL;
    // stb allocates what the header claims before it reads a pixel (a 70-byte
    // BMP naming 65391 x 9986 pixels cost 2 GB), so read the header first.
    // A header stb cannot read is left to the decoder, whose reason is the
    // more precise one.
    if (read_header(f, w, h, why) < 0) {
        fclose(f);
        return NULL;
    }
    // req_comp makes stb do the grey <-> RGB (and alpha dropping) conversion.
    int in_ch = 0;
    uint8_t *p = stbi_load_from_file(f, w, h, &in_ch, channels);
    fclose(f);
    if (!p) {
        const char *r = stbi_failure_reason();
        if (why) *why = r ? r : "unknown decoding failure";
        return NULL;
    }
    if (*w <= 0 || *h <= 0) {
        stbi_image_free(p);
        if (why) *why = "image has no pixels";
        return NULL;
    }
    return p;
}

void image_free(uint8_t *pixels) { stbi_image_free(pixels); }

void image_resize_crop(uint8_t *out, const uint8_t *in, int w, int h,
                       int channels, int size) {
    CHECK(w > 0 && h > 0 && size > 0);
    // Crop the central square first, then resize it to size x size: the same
    // picture as resizing the shorter side and cropping, but the work and
    // memory stay bounded by the square even for an extreme aspect ratio
    // (a 2 x 3,000,000 image resized first would need a 32 x 48M buffer).
    // stb reads the square in place through the row stride.
    int m = w < h ? w : h, x0 = (w - m) / 2, y0 = (h - m) / 2;
    size_t stride = (size_t)w * channels;
    const uint8_t *sq = in + (size_t)y0 * stride + (size_t)x0 * channels;
    if (m == size) {
        for (int y = 0; y < size; y++)
            memcpy(out + (size_t)y * size * channels, sq + (size_t)y * stride,
                   (size_t)size * channels);
        return;
    }
    CHECK(stride <= INT32_MAX);
    CHECK(stbir_resize_uint8(sq, m, m, (int)stride, out, size, size, 0, channels) == 1);
}

// stb's own file writer ignores fwrite() failures, so a full disk would
// leave a truncated PNG that looks written; write through a callback that
// checks every write, then check the flush and close too.
typedef struct {
    FILE *f;
    int failed;
} PngSink;

static void png_sink_write(void *ctx, void *data, int size) {
    PngSink *s = ctx;
    if (!s->failed && fwrite(data, 1, (size_t)size, s->f) != (size_t)size) s->failed = 1;
}

int png_write(const char *path, const uint8_t *pixels, int w, int h, int channels) {
    CHECK(w > 0 && h > 0 && channels >= 1 && channels <= 4);
    char tmp[PATH_MAX];
    // Written beside the target and renamed, so a reader never sees half a PNG.
    if (tmp_begin(tmp, sizeof tmp, path)) return -1;
    PngSink sink = {fopen(tmp, "wb"), 0};
    if (!sink.f) {
        int e = errno;
        discard_tmp_file(tmp);
        return errorf("%s: cannot write PNG: %s", path, strerror(e));
    }
    int ok = stbi_write_png_to_func(png_sink_write, &sink, w, h, channels, pixels, w * channels);
    int e = 0;
    if (!ok || sink.failed || fflush(sink.f) != 0) e = errno ? errno : EIO;
    if (fclose(sink.f) != 0 && !e) e = errno ? errno : EIO;
    if (!ok || e) {
        discard_tmp_file(tmp);
        return errorf("%s: cannot write PNG: %s", path, strerror(e ? e : EIO));
    }
    return commit_tmp_file(tmp, path);
}

uint8_t image_pixel_u8(float x) {
    if (!(x >= -1.0f)) x = -1.0f; // also maps NaN to -1
    if (x > 1.0f) x = 1.0f;
    return (uint8_t)lroundf((x + 1.0f) * 127.5f);
}

void image_to_u8(uint8_t *out, const float *img, int C, int H, int W) {
    // img (C, H, W) -> out (H, W, C)
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++)
                out[((size_t)y * W + x) * C + c] = image_pixel_u8(img[((size_t)c * H + y) * W + x]);
}

int png_write_grid(const char *path, const float *images, int B, int C, int H,
                   int W, int cols) {
    CHECK(B > 0 && B <= GRID_MAX_IMAGES && (C == 1 || C == 3) && H > 0 && W > 0);
    if (cols < 1) cols = 1;
    if (cols > B) cols = B;
    const int gap = 2;
    int rows = (B + cols - 1) / cols;
    int GW = cols * W + (cols - 1) * gap, GH = rows * H + (rows - 1) * gap;
    uint8_t *grid = xcalloc((size_t)GW * GH * C, 1); // (GH, GW, C), gaps black
    uint8_t *one = xmalloc((size_t)H * W * C);      // (H, W, C)
    for (int b = 0; b < B; b++) {
        image_to_u8(one, images + (size_t)b * C * H * W, C, H, W);
        int gx = (b % cols) * (W + gap), gy = (b / cols) * (H + gap);
        for (int y = 0; y < H; y++)
            memcpy(grid + ((size_t)(gy + y) * GW + gx) * C, one + (size_t)y * W * C,
                   (size_t)W * C);
    }
    int rc = png_write(path, grid, GW, GH, C);
    free(one);
    free(grid);
    return rc;
}
