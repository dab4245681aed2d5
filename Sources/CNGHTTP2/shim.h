#ifndef RAFFLED_CNGHTTP2_SHIM_H
#define RAFFLED_CNGHTTP2_SHIM_H
// libnghttp2 as installed by Debian's libnghttp2-dev (1.52 with backported reset/CONTINUATION limits).
#include <nghttp2/nghttp2.h>
#endif
