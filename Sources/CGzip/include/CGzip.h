// CGzip: gzip decompression through zlib, for data sets shipped as .gz files.
#ifndef BACKPROP_CGZIP_H
#define BACKPROP_CGZIP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Decompresses the gzip data in[n] (one or more members) into out[capacity]. Returns the bytes
/// written, or −1 when the data is not valid gzip, −2 when it ends early, −3 when out is too small.
int64_t bp_gunzip(uint8_t *out, int64_t capacity, const uint8_t *in, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
