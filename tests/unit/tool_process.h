// tests/unit/tool_process.h — a test server from tests/tools/ (capture_sink.py, keyserver.py) as a
// child process: started with `--listen 127.0.0.1:0 --dir DIR` and the extra arguments, its
// "READY <port>" line read from standard output (at most 15 s; port() is 0 when it never came),
// SIGTERM and waitpid() at the end.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace postvault::test_support {

// The source tree: $POSTVAULT_SOURCE_DIR, else where this header is.
inline std::filesystem::path source_dir() {
    if (const char* dir = std::getenv("POSTVAULT_SOURCE_DIR")) return dir;
    return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

class ToolProcess {
public:
    ToolProcess(const std::string& tool, const std::filesystem::path& dir, std::vector<std::string> extra) {
        std::vector<std::string> args = {"/usr/bin/python3", (source_dir() / "tests" / "tools" / tool).string(),
                                         "--listen", "127.0.0.1:0", "--dir", dir.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        std::vector<char*> argv;
        for (auto& arg : args) argv.push_back(arg.data());
        argv.push_back(nullptr);

        int pipe_fds[2];
        if (pipe(pipe_fds) != 0) return;
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
        const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        close(pipe_fds[1]);
        if (rc != 0) {
            pid_ = -1;
            close(pipe_fds[0]);
            return;
        }
        std::string line;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
        fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
        while (std::chrono::steady_clock::now() < deadline && line.find('\n') == std::string::npos) {
            char c;
            const ssize_t n = read(pipe_fds[0], &c, 1);
            if (n == 1) line += c;
            else if (n == 0) break;
            else std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        close(pipe_fds[0]);
        if (line.rfind("READY ", 0) == 0) port_ = static_cast<std::uint16_t>(std::stoi(line.substr(6)));
    }
    ~ToolProcess() {
        if (pid_ > 0) {
            kill(pid_, SIGTERM);
            int status = 0;
            waitpid(pid_, &status, 0);
        }
    }
    ToolProcess(const ToolProcess&) = delete;
    ToolProcess& operator=(const ToolProcess&) = delete;

    std::uint16_t port() const { return port_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

private:
    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
};

}  // namespace postvault::test_support
