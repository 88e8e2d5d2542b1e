#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace postvault {

std::string printable(std::string_view text) {
    std::string result;
    result.reserve(text.size());
    for (unsigned char c : text) {
        if (c < 0x20 || c == 0x7F || c == '\\') {
            static const char hex[] = "0123456789abcdef";
            result += "\\x";
            result += hex[c >> 4];
            result += hex[c & 0xF];
        } else {
            result += static_cast<char>(c);
        }
    }
    return result;
}

Status setup_logging(const std::string& level) {
    if (!is_log_level(level)) {
        return Error::permanent("log.level", "unknown log level '" + level + "'");
    }
    static const bool installed = [] {
        auto logger = spdlog::stderr_logger_mt("postvault");
        spdlog::set_default_logger(logger);
        spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
        spdlog::flush_on(spdlog::level::info);
        return true;
    }();
    (void)installed;
    spdlog::set_level(spdlog::level::from_str(level));
    return Status::success();
}

}  // namespace postvault
