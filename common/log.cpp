#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace postvault {

bool is_log_level(const std::string& level) {
    return level == "trace" || level == "debug" || level == "info" || level == "warn" ||
           level == "error";
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
