// search/xapian_error.h — a Xapian exception as postvault's Error, at search/'s boundary
// (the index writer and the searcher): temporary "search.io" with what was being done.
#pragma once

#include <string>

#include <xapian.h>

#include "common/result.h"

namespace postvault::search {

inline Error xapian_error(const std::string& what, const Xapian::Error& error) {
    return Error::temporary("search.io", what + ": " + error.get_type() + ": " + error.get_msg());
}

}  // namespace postvault::search
