// common/log.h — logging setup.
//
// postvault logs with spdlog to standard error, one event per line, as
// "2026-11-29T06:00:00.123Z info smtp: qid=0AB... from=<a@b> ..." — key=value
// fields after the module name so lines can be grepped and parsed. Every line
// about a message carries qid=. Secrets (passwords, keys) are never logged.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace postvault {

// Sets the global level ("trace", "debug", "info", "warn", "error") and format.
Status setup_logging(const std::string& level);
inline bool is_log_level(const std::string& level) {  // inline: the config loader needs no spdlog
    return level == "trace" || level == "debug" || level == "info" || level == "warn" || level == "error";
}

// `text` safe for one log line: control characters and bytes that would let a
// client forge a line ("\n... status=sent") become \xNN escapes.
std::string printable(std::string_view text);

}  // namespace postvault
