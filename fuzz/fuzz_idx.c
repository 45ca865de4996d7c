// fuzz_idx: the IDX reader (imageset_load on a file), with or without a
// labels file. Input: byte 0 = flags (bit 0: a labels file made of the last
// byte-1 bytes; bit 1: side 32 instead of 8; bit 2: 3 channels), then the
// images file.
#include <stdint.h>

#include "fuzz_util.h"
#include "imageset.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (n < 2) return 0;
    char img[256], lab[256];
    snprintf(img, sizeof img, "%s/f-images-idx3-ubyte", fuzz_dir());
    snprintf(lab, sizeof lab, "%s/f-labels-idx1-ubyte", fuzz_dir());
    size_t nl = (d[0] & 1) ? d[1] : 0;
    if (nl > n - 2) nl = n - 2;
    fuzz_write(img, d + 2, n - 2 - nl);
    if (d[0] & 1) fuzz_write(lab, d + n - nl, nl);
    else unlink(lab);
    ImageSet s;
    if (imageset_load(&s, img, (d[0] & 2) ? 32 : 8, (d[0] & 4) ? 3 : 1) == 0) {
        // Touch every decoded item through the batch gather.
        float *x = malloc((size_t)s.C * s.S * s.S * sizeof(float));
        for (int i = 0; i < s.N && i < 64; i++) imageset_batch(x, &s, &i, 1, NULL);
        free(x);
        imageset_free(&s);
    }
    return 0;
}
