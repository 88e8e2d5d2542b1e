// gateway/crypto/gpg_server.cpp — GpgServerSession (gpg_server.h).
#include "gateway/crypto/gpg_server.h"

#include <assuan.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "common/file_stamp.h"
#include "common/gpgme_handle.h"

namespace postvault::crypto {

namespace {

constexpr const char* kEngine = "pgp.engine";

// The keyring files whose change ends a session's use.
constexpr std::array<const char*, 3> kWatched = {"pubring.kbx", "gpg.conf", "trustdb.gpg"};

using KeyringStamp = std::array<std::optional<FileStamp>, kWatched.size()>;

KeyringStamp stamp_of(const std::string& home) {
    KeyringStamp stamp;
    for (std::size_t i = 0; i < kWatched.size(); ++i) stamp[i] = file_stamp(std::filesystem::path(home) / kWatched[i]);
    return stamp;
}

// The gpg program GPGME runs for OpenPGP.
Result<std::string> gpg_program() {
    if (!gpgme::ensure_gpgme()) return Error::temporary(kEngine, "no usable gpg is installed");
    gpgme_engine_info_t info = nullptr;
    if (gpgme_error_t error = gpgme_get_engine_info(&info); error != 0)
        return Error::temporary(kEngine, gpgme::error_text(error));
    for (; info != nullptr; info = info->next)
        if (info->protocol == GPGME_PROTOCOL_OpenPGP && info->file_name != nullptr) return std::string(info->file_name);
    return Error::temporary(kEngine, "GPGME names no gpg program");
}

bool is_fingerprint(const std::string& text) {
    if (text.size() < 16 || text.size() > 64) return false;
    for (const char c : text)
        if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    return true;
}

// A memfd closed when it goes out of scope.
class MemoryFile {
public:
    explicit MemoryFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {}
    ~MemoryFile() {
        if (fd_ >= 0) ::close(fd_);
    }
    MemoryFile(const MemoryFile&) = delete;
    MemoryFile& operator=(const MemoryFile&) = delete;
    int fd() const { return fd_; }

    bool write_all(std::string_view bytes) const {
        while (!bytes.empty()) {
            const ssize_t written = ::write(fd_, bytes.data(), bytes.size());
            if (written < 0 && errno == EINTR) continue;
            if (written <= 0) return false;
            bytes.remove_prefix(static_cast<std::size_t>(written));
        }
        return ::lseek(fd_, 0, SEEK_SET) == 0;
    }

    bool read_all(std::string& bytes) const {
        struct stat info {};
        if (::fstat(fd_, &info) != 0) return false;
        bytes.resize(static_cast<std::size_t>(info.st_size));
        std::size_t done = 0;
        while (done < bytes.size()) {
            const ssize_t got = ::pread(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) return false;
            done += static_cast<std::size_t>(got);
        }
        return true;
    }

private:
    int fd_;
};

}  // namespace

struct GpgServerSession::Impl {
    std::string home;
    KeyringStamp stamp;
    assuan_context_t context = nullptr;

    ~Impl() {
        // Closes the socket (gpg exits at its end) and reaps gpg.
        if (context != nullptr) assuan_release(context);
    }

    Status transact(const std::string& command) const {
        if (gpg_error_t error = assuan_transact(context, command.c_str(), nullptr, nullptr, nullptr, nullptr, nullptr,
                                                nullptr);
            error != 0)
            return Error::temporary(kEngine, "gpg --server: " + command.substr(0, command.find(' ')) + ": " +
                                                 gpgme::error_text(error));
        return Status::success();
    }

    Status pass_file(const char* command, int fd) const {
        if (gpg_error_t error = assuan_sendfd(context, fd); error != 0)
            return Error::temporary(kEngine, std::string("gpg --server: passing a file: ") + gpgme::error_text(error));
        return transact(command);
    }
};

GpgServerSession::GpgServerSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GpgServerSession::~GpgServerSession() = default;

Result<std::unique_ptr<GpgServerSession>> GpgServerSession::start(const std::string& home) {
    auto program = gpg_program();
    if (!program) return program.error();
    auto impl = std::make_unique<Impl>();
    impl->home = home;
    impl->stamp = stamp_of(home);  // before gpg reads the keyring: a change while it starts is seen
    if (gpg_error_t error = assuan_new(&impl->context); error != 0)
        return Error::temporary(kEngine, "assuan_new: " + gpgme::error_text(error));
    // Armored output; the lookup decided trust; never a network lookup of its own; gpg.conf (the
    // cipher) as for every other operation on this home.
    const char* argv[] = {program->c_str(), "--server",      "--homedir",        home.c_str(), "--batch",
                          "--no-tty",       "--armor",       "--always-trust",   "--auto-key-locate", "local",
                          "--no-auto-key-retrieve", nullptr};
    if (gpg_error_t error = assuan_pipe_connect(impl->context, program->c_str(), argv, nullptr, nullptr, nullptr,
                                                ASSUAN_PIPE_CONNECT_FDPASSING);
        error != 0)
        return Error::temporary(kEngine, "cannot start gpg --server: " + gpgme::error_text(error));
    return std::unique_ptr<GpgServerSession>(new GpgServerSession(std::move(impl)));
}

bool GpgServerSession::current() const { return stamp_of(impl_->home) == impl_->stamp; }

Result<std::string> GpgServerSession::encrypt(std::string_view plaintext, const std::vector<std::string>& fingerprints) {
    if (fingerprints.empty()) return Error::temporary(kEngine, "gpg --server: no recipients");
    if (auto reset = impl_->transact("RESET"); !reset) return reset.error();
    for (const auto& fingerprint : fingerprints) {
        // Commands are lines: only a plain fingerprint goes into one.
        if (!is_fingerprint(fingerprint))
            return Error::temporary(kEngine, "gpg --server: '" + fingerprint + "' is not a fingerprint");
        if (auto added = impl_->transact("RECIPIENT " + fingerprint); !added) return added.error();
    }
    const MemoryFile input("postvault-plaintext"), output("postvault-encrypted");
    if (input.fd() < 0 || output.fd() < 0 || !input.write_all(plaintext))
        return Error::temporary(kEngine, std::string("gpg --server: memfd: ") + std::strerror(errno));
    if (auto passed = impl_->pass_file("INPUT FD", input.fd()); !passed) return passed.error();
    if (auto passed = impl_->pass_file("OUTPUT FD", output.fd()); !passed) return passed.error();
    if (auto encrypted = impl_->transact("ENCRYPT"); !encrypted) return encrypted.error();
    std::string armored;
    if (!output.read_all(armored))
        return Error::temporary(kEngine, std::string("gpg --server: reading the output: ") + std::strerror(errno));
    if (!armored.starts_with("-----BEGIN PGP MESSAGE-----"))
        return Error::temporary(kEngine, "gpg --server: ENCRYPT wrote no armored message");
    return armored;
}

}  // namespace postvault::crypto
