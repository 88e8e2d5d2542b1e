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
#include <string_view>

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

// A message parsed from `bytes` (copied into GMime's stream); null when GMime finds none.
inline GObjectPtr<GMimeMessage> parse_message(std::string_view bytes) {
    ensure_gmime();
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(bytes.data(), bytes.size()));
    GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    return GObjectPtr<GMimeMessage>(g_mime_parser_construct_message(parser.get(), nullptr));
}

// The decoded content of a leaf part (transfer encoding removed); "" when it has none.
inline std::string part_content(GMimePart* part) {
    GMimeDataWrapper* wrapper = part != nullptr ? g_mime_part_get_content(part) : nullptr;
    if (wrapper == nullptr) return {};
    GObjectPtr<GMimeStream> out(g_mime_stream_mem_new());
    g_mime_data_wrapper_write_to_stream(wrapper, out.get());
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.get()));
    return bytes != nullptr ? std::string(reinterpret_cast<const char*>(bytes->data), bytes->len) : std::string();
}

}  // namespace postvault
