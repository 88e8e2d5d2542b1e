// common/gmime.h — RAII for GMime/GLib handles, shared by every module that
// parses or builds MIME (delivery's DSNs, the archive's leaf finder and importers).
//
// GObjectPtr<T> owns one reference (g_object_unref); GCharPtr owns a g_free()
// string; GDateTimePtr and FormatOptionsPtr free theirs. ensure_gmime() runs
// g_mime_init() once per process (thread safe); call it before any GMime use.
#pragma once

#include <gmime/gmime.h>

#include <memory>
#include <mutex>
#include <string>

namespace postvault {

struct GObjectUnref {
    void operator()(void* object) const {
        if (object != nullptr) g_object_unref(object);
    }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

struct GFree {
    void operator()(void* memory) const { g_free(memory); }
};
using GCharPtr = std::unique_ptr<char, GFree>;

struct GDateTimeUnref {
    void operator()(GDateTime* date) const {
        if (date != nullptr) g_date_time_unref(date);
    }
};
using GDateTimePtr = std::unique_ptr<GDateTime, GDateTimeUnref>;

struct FormatOptionsFree {
    void operator()(GMimeFormatOptions* options) const {
        if (options != nullptr) g_mime_format_options_free(options);
    }
};
using FormatOptionsPtr = std::unique_ptr<GMimeFormatOptions, FormatOptionsFree>;

inline std::string take_string(GCharPtr text) { return text ? std::string(text.get()) : std::string(); }

inline void ensure_gmime() {
    static std::once_flag once;
    std::call_once(once, [] { g_mime_init(); });
}

}  // namespace postvault
