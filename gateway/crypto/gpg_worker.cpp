// gateway/crypto/gpg_worker.cpp — worker_gpg_engine (the server's side, gpg_engine.h) and
// run_gpg_worker (the worker's side, gpg_worker.h), with the framing both share.
#include "gateway/crypto/gpg_worker.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "gateway/crypto/gpg_engine.h"

extern char** environ;

namespace postvault::crypto {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr const char* kEngine = "pgp.engine";

// Waits until `fd` is ready for `events` or the deadline passes (no deadline: wait as long as it takes).
bool wait_ready(int fd, short events, const Clock::time_point* deadline) {
    for (;;) {
        int timeout_ms = -1;
        if (deadline != nullptr) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
            if (left <= 0) return false;
            timeout_ms = static_cast<int>(std::min<long long>(left, 60'000));
        }
        pollfd entry{fd, events, 0};
        const int ready = ::poll(&entry, 1, timeout_ms);
        if (ready > 0) return true;
        if (ready < 0 && errno != EINTR) return false;
    }
}

// Error text for a failed frame transfer.
std::string io_error(const char* what, bool timed_out) {
    if (timed_out) return std::string(what) + ": timed out";
    return std::string(what) + ": " + (errno != 0 ? std::strerror(errno) : "connection closed");
}

Status write_all(int fd, const std::uint8_t* bytes, std::size_t size, const Clock::time_point* deadline) {
    while (size > 0) {
        if (!wait_ready(fd, POLLOUT, deadline)) return Error::temporary(kEngine, io_error("writing to the gpg worker", true));
        const ssize_t written = ::send(fd, bytes, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (written < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return Error::temporary(kEngine, io_error("writing to the gpg worker", false));
        }
        bytes += written;
        size -= static_cast<std::size_t>(written);
    }
    return Status::success();
}

// Reads exactly `size` bytes. `closed` is set when the peer closed before the first byte.
Status read_all(int fd, std::uint8_t* bytes, std::size_t size, const Clock::time_point* deadline, bool* closed) {
    const std::size_t wanted = size;
    while (size > 0) {
        if (!wait_ready(fd, POLLIN, deadline)) return Error::temporary(kEngine, io_error("reading from the gpg worker", true));
        const ssize_t got = ::recv(fd, bytes, size, MSG_DONTWAIT);
        if (got == 0) {
            if (closed != nullptr && size == wanted) *closed = true;
            errno = 0;
            return Error::temporary(kEngine, io_error("reading from the gpg worker", false));
        }
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return Error::temporary(kEngine, io_error("reading from the gpg worker", false));
        }
        bytes += got;
        size -= static_cast<std::size_t>(got);
    }
    return Status::success();
}

Status write_frame(int fd, const json& message, const Clock::time_point* deadline) {
    const std::vector<std::uint8_t> body = json::to_cbor(message);
    std::uint8_t header[8];
    const std::uint64_t length = body.size();
    for (int i = 0; i < 8; ++i) header[i] = static_cast<std::uint8_t>(length >> (8 * i));
    if (auto sent = write_all(fd, header, sizeof header, deadline); !sent) return sent;
    return write_all(fd, body.data(), body.size(), deadline);
}

Result<json> read_frame(int fd, const Clock::time_point* deadline, bool* closed) {
    std::uint8_t header[8];
    if (auto got = read_all(fd, header, sizeof header, deadline, closed); !got) return got.error();
    std::uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= std::uint64_t{header[i]} << (8 * i);
    if (length > kMaxGpgWorkerFrame)
        return Error::temporary(kEngine, "gpg worker frame of " + std::to_string(length) + " bytes exceeds the limit");
    std::vector<std::uint8_t> body(length);
    if (auto got = read_all(fd, body.data(), body.size(), deadline, nullptr); !got) return got.error();
    try {
        return json::from_cbor(body);
    } catch (const json::exception& e) {
        return Error::temporary(kEngine, std::string("unreadable gpg worker frame: ") + e.what());
    }
}

json bytes_value(std::string_view bytes) {
    return json::binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end()));
}

std::string bytes_of(const json& value) {
    const auto& binary = value.get_binary();
    return std::string(binary.begin(), binary.end());
}

json error_answer(const Error& error) {
    return {{"ok", false}, {"code", error.code}, {"temporary", error.is_temporary()}, {"message", error.message}};
}

json signature_value(const SignatureCheck& check) {
    return {{"present", check.present}, {"valid", check.valid}, {"signer", check.signer}, {"summary", check.summary}};
}

SignatureCheck signature_of(const json& value) {
    SignatureCheck check;
    check.present = value.at("present").get<bool>();
    check.valid = value.at("valid").get<bool>();
    check.signer = value.at("signer").get<std::string>();
    check.summary = value.at("summary").get<std::string>();
    return check;
}

// The worker's side of one request.
json answer(GpgEngine& engine, const json& request) {
    const std::string op = request.at("op").get<std::string>();
    const std::string data = bytes_of(request.at("data"));
    if (op == "encrypt") {
        auto made = engine.encrypt(data, request.at("recipients").get<std::vector<std::string>>(),
                                   request.at("signer").get<std::string>());
        if (!made) return error_answer(made.error());
        return {{"ok", true}, {"data", bytes_value(*made)}};
    }
    if (op == "sign") {
        auto made = engine.sign_detached(data, request.at("signer").get<std::string>());
        if (!made) return error_answer(made.error());
        return {{"ok", true}, {"data", bytes_value(made->signature)}, {"micalg", made->micalg}};
    }
    if (op == "decrypt") {
        auto made = engine.decrypt(data);
        if (!made) return error_answer(made.error());
        return {{"ok", true},
                {"data", bytes_value(made->plaintext)},
                {"recipients", made->recipients},
                {"signature", signature_value(made->signature)}};
    }
    if (op == "verify") {
        auto made = engine.verify(data, bytes_of(request.at("signature")));
        if (!made) return error_answer(made.error());
        return {{"ok", true}, {"signature", signature_value(*made)}};
    }
    return error_answer(Error::permanent(kEngine, "unknown gpg worker operation '" + op + "'"));
}

class WorkerGpgEngine final : public GpgEngine {
public:
    explicit WorkerGpgEngine(WorkerOptions options) : options_(std::move(options)) {
        if (options_.processes == 0) options_.processes = 1;
    }

    ~WorkerGpgEngine() override {
        std::lock_guard lock(mutex_);
        for (const Worker& worker : idle_) stop(worker, false);
    }

    Result<std::string> encrypt(std::string_view plaintext, const std::vector<std::string>& recipients,
                                const std::string& signer) override {
        auto answered = call({{"op", "encrypt"}, {"data", bytes_value(plaintext)}, {"recipients", recipients},
                              {"signer", signer}});
        if (!answered) return answered.error();
        return bytes_of(answered->at("data"));
    }

    Result<DetachedSignature> sign_detached(std::string_view data, const std::string& signer) override {
        auto answered = call({{"op", "sign"}, {"data", bytes_value(data)}, {"signer", signer}});
        if (!answered) return answered.error();
        return DetachedSignature{bytes_of(answered->at("data")), answered->at("micalg").get<std::string>()};
    }

    Result<DecryptOutput> decrypt(std::string_view ciphertext) override {
        auto answered = call({{"op", "decrypt"}, {"data", bytes_value(ciphertext)}});
        if (!answered) return answered.error();
        DecryptOutput out;
        out.plaintext = bytes_of(answered->at("data"));
        out.recipients = answered->at("recipients").get<std::vector<std::string>>();
        out.signature = signature_of(answered->at("signature"));
        return out;
    }

    Result<SignatureCheck> verify(std::string_view data, std::string_view signature) override {
        auto answered = call({{"op", "verify"}, {"data", bytes_value(data)}, {"signature", bytes_value(signature)}});
        if (!answered) return answered.error();
        return signature_of(answered->at("signature"));
    }

private:
    struct Worker {
        pid_t pid = -1;
        int fd = -1;
    };

    // Sends one request to an idle worker (starting one when fewer than `processes` run) and
    // returns its successful answer. A worker that fails to answer is stopped and not reused; when
    // it failed without timing out (it died, perhaps while idle) the request goes once more to a
    // fresh worker: every operation is free of side effects.
    Result<json> call(const json& request) {
        Result<json> answered = Error::temporary(kEngine, "no gpg worker answered");
        for (int attempt = 0; attempt < 2; ++attempt) {
            auto acquired = acquire();
            if (!acquired) return acquired.error();
            const Worker worker = *acquired;
            const Clock::time_point deadline = Clock::now() + options_.timeout;
            auto exchange = [&]() -> Result<json> {
                if (auto sent = write_frame(worker.fd, request, &deadline); !sent) return sent.error();
                return read_frame(worker.fd, &deadline, nullptr);
            };
            answered = exchange();
            if (answered) {
                release(worker, true);
                break;
            }
            spdlog::error("pgp: gpg worker {}: {}; stopping it", worker.pid, answered.error().message);
            release(worker, false);
            if (Clock::now() >= deadline) return answered.error();
        }
        if (!answered) return answered.error();
        try {
            if (answered->at("ok").get<bool>()) return answered;
            const std::string code = answered->at("code").get<std::string>();
            const std::string message = answered->at("message").get<std::string>();
            return answered->at("temporary").get<bool>() ? Error::temporary(code, message)
                                                         : Error::permanent(code, message);
        } catch (const json::exception& e) {
            return Error::temporary(kEngine, std::string("malformed gpg worker answer: ") + e.what());
        }
    }

    Result<Worker> acquire() {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return !idle_.empty() || started_ < options_.processes; });
        if (!idle_.empty()) {
            Worker worker = idle_.back();
            idle_.pop_back();
            return worker;
        }
        ++started_;
        lock.unlock();
        auto spawned = spawn();
        if (!spawned) {
            lock.lock();
            --started_;
            ready_.notify_one();
        }
        return spawned;
    }

    void release(const Worker& worker, bool healthy) {
        std::lock_guard lock(mutex_);
        if (healthy) {
            idle_.push_back(worker);
        } else {
            stop(worker, true);
            --started_;
        }
        ready_.notify_one();
    }

    Result<Worker> spawn() const {
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
            return Error::temporary(kEngine, std::string("socketpair: ") + std::strerror(errno));
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDIN_FILENO);
        std::string program = options_.program, home_flag = "--home", home = options_.home;
        char* argv[] = {program.data(), home_flag.data(), home.data(), nullptr};
        pid_t pid = -1;
        const int failed = ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv, environ);
        posix_spawn_file_actions_destroy(&actions);
        ::close(fds[1]);
        if (failed != 0) {
            ::close(fds[0]);
            return Error::temporary(kEngine, "cannot start " + program + ": " + std::strerror(failed));
        }
        spdlog::debug("pgp: started gpg worker {}", pid);
        return Worker{pid, fds[0]};
    }

    // Closing the socket ends an idle worker; one that failed is killed first.
    static void stop(const Worker& worker, bool kill) {
        if (kill) ::kill(worker.pid, SIGKILL);
        ::close(worker.fd);
        int status = 0;
        while (::waitpid(worker.pid, &status, 0) < 0 && errno == EINTR) {
        }
    }

    WorkerOptions options_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::vector<Worker> idle_;
    unsigned started_ = 0;  // workers running, idle or busy
};

}  // namespace

std::unique_ptr<GpgEngine> worker_gpg_engine(const WorkerOptions& options) {
    return std::make_unique<WorkerGpgEngine>(options);
}

int run_gpg_worker(int fd, const std::string& home) {
    ::signal(SIGPIPE, SIG_IGN);
    auto engine = local_gpg_engine(home);
    for (;;) {
        bool closed = false;
        auto request = read_frame(fd, nullptr, &closed);
        if (!request) {
            if (closed) return 0;
            spdlog::error("postvault-pgp: {}", request.error().message);
            return 1;
        }
        json reply;
        try {
            reply = answer(*engine, *request);
        } catch (const json::exception& e) {
            spdlog::error("postvault-pgp: malformed request: {}", e.what());
            return 1;
        }
        if (auto sent = write_frame(fd, reply, nullptr); !sent) {
            spdlog::error("postvault-pgp: {}", sent.error().message);
            return 1;
        }
    }
}

}  // namespace postvault::crypto
