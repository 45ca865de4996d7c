// fuzz_image: image decoding through image_load (stb behind it) and the
// resize/crop every folder image goes through. Input: byte 0 = flags
// (bit 0: 3 channels; bits 1-2: the file suffix), then the file.
#include <stdint.h>

#include "fuzz_util.h"
#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (n < 1) return 0;
    static const char *ext[] = {"png", "jpg", "bmp", "jpeg"};
    char path[256];
    snprintf(path, sizeof path, "%s/f.%s", fuzz_dir(), ext[(d[0] >> 1) & 3]);
    fuzz_write(path, d + 1, n - 1);
    int channels = (d[0] & 1) ? 3 : 1, w, h;
    const char *why = NULL;
    uint8_t *px = image_load(path, channels, &w, &h, &why);
    if (!px) {
        if (!why) abort(); // a failure must say why
        return 0;
    }
    if (w < 1 || h < 1) abort();
    uint8_t out[3 * 16 * 16];
    image_resize_crop(out, px, w, h, channels, 16);
    image_free(px);
    return 0;
}
