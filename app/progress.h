// app/progress.h — a progress bar on standard error for long commands (archive import,
// search reindex), drawn only when standard error is a terminal.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace postvault::app {

class ProgressBar {
public:
    explicit ProgressBar(std::string label) : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) != 0) {}
    ~ProgressBar() { finish(); }
    void update(std::uint64_t done, std::uint64_t total, std::uint64_t items) {
        if (!enabled_) return;
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        const double fraction = total ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 0.0;
        const int width = 30;
        const int filled = static_cast<int>(fraction * width);
        std::fprintf(stderr, "\r%s [%s%s] %3d%%  %llu  %.0f/s ", label_.c_str(), std::string(filled, '#').c_str(),
                     std::string(width - filled, ' ').c_str(), static_cast<int>(fraction * 100),
                     static_cast<unsigned long long>(items), seconds > 0 ? static_cast<double>(items) / seconds : 0.0);
        std::fflush(stderr);
        shown_ = true;
    }
    void finish() {
        if (enabled_ && shown_) std::fputc('\n', stderr);
        shown_ = false;
    }

private:
    std::string label_;
    bool enabled_;
    bool shown_ = false;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace postvault::app
