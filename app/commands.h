// app/commands.h — the subcommands of the one `postvault` binary.
//
// main.cpp parses the command line with CLI11 and calls one of these; each
// returns the process exit status (0 success, 1 failure, 2 bad usage) and
// prints its own diagnostics on standard error.
#pragma once

#include <string>

namespace postvault::app {

struct InitOptions {
    std::string directory = "var";
    std::string hostname;       // default: the machine's host name
    bool force = false;         // overwrite an existing configuration
};

int run_init(const InitOptions& options);
int run_serve(const std::string& config_path);

}  // namespace postvault::app
