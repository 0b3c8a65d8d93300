// gzip decompression through zlib, for data sets shipped as .gz files.
#include "CGzip.h"

#include <zlib.h>

int64_t bp_gunzip(uint8_t *out, int64_t capacity, const uint8_t *in, int64_t n) {
    z_stream z = {0};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return -1;  // 16: expect a gzip header
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)capacity;
    int64_t result;
    for (;;) {
        int status = inflate(&z, Z_NO_FLUSH);
        if (status == Z_STREAM_END) {
            if (z.avail_in == 0) { result = capacity - (int64_t)z.avail_out; break; }
            inflateReset(&z);  // another gzip member follows (inflateReset zeroes total_out, not avail_out)
            continue;
        }
        if (status == Z_OK) continue;
        if (status == Z_BUF_ERROR) result = z.avail_out == 0 ? -3 : -2;  // no room, or input ended early
        else result = -1;
        break;
    }
    inflateEnd(&z);
    return result;
}
