// archive/escrow.cpp — escrow-mode encryption through GPGME (see escrow.h).
//
// Every operation takes a GPGME context bound to a GnuPG home with
// gpgme_ctx_set_engine_info, so nothing here reads or changes $GNUPGHOME, from
// a ContextPool, so concurrent calls never share a context. The pool exists
// because binding a fresh context to a home makes GPGME run "gpg --version"
// again: reusing contexts halves the processes started per call.
#include "archive/escrow.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "common/gpgme_handle.h"

extern char** environ;

namespace postvault::archive {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxKeyFileSize = 16 << 20;
// gpg-agent's socket is "<home>/S.gpg-agent.extra" and sun_path holds 108
// bytes; without /run/user to fall back on, a longer home breaks the agent.
constexpr std::size_t kMaxTemporaryBaseLength = 64;
constexpr std::string_view kSelfTestText = "postvault escrow self-test";

Result<std::string> read_key_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return Error::permanent("archive.escrow_key", "cannot read escrow key file " + path);
    std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (file.bad()) return Error::permanent("archive.escrow_key", "cannot read escrow key file " + path);
    if (bytes.size() > kMaxKeyFileSize) return Error::permanent("archive.escrow_key", path + " is too large");
    return bytes;
}

// True when the file starts with a secret-key packet or an armored secret key
// block: such a file must not be imported into the gateway's home at all.
bool looks_like_secret_key(std::string_view bytes) {
    if (bytes.find("-----BEGIN PGP PRIVATE KEY BLOCK-----") != std::string_view::npos) return true;
    if (bytes.empty()) return false;
    auto header = static_cast<unsigned char>(bytes.front());
    if ((header & 0x80) == 0) return false;
    unsigned tag = (header & 0x40) != 0 ? (header & 0x3f) : ((header >> 2) & 0x0f);
    return tag == 5;   // Secret-Key packet (RFC 4880 5.5.1.3)
}

// Creates `directory` and any missing parent, each new one 0700.
Status make_private_directories(const fs::path& directory) {
    fs::path prefix;
    for (const auto& part : directory) {
        prefix /= part;
        if (::mkdir(prefix.c_str(), 0700) == 0) {
            ::chmod(prefix.c_str(), 0700);
        } else if (errno != EEXIST) {
            return Error::temporary("archive.escrow_home",
                                    "cannot create " + prefix.string() + ": " + std::strerror(errno));
        }
    }
    struct stat info {};
    if (::stat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode))
        return Error::permanent("archive.escrow_home", directory.string() + " is not a directory");
    return Status::success();
}

Error engine_missing() {
    return Error::permanent("archive.escrow_engine", "GPGME finds no usable gpg (OpenPGP engine)");
}

// A context on `home`, binary output, no network lookups.
Result<gpgme::Context> make_context(const std::string& home) {
    return gpgme::make_context(home, "archive.escrow_engine");
}

}  // namespace

class ContextPool {
public:
    using Configure = void (*)(gpgme_ctx_t, void* hook);

    // `configure`, when given, is applied to each new context with `hook`.
    ContextPool(std::string home, Configure configure = nullptr, void* hook = nullptr)
        : home_(std::move(home)), configure_(configure), hook_(hook) {}

    // A context for one operation; give it back with release() when the
    // operation succeeded (a context after an error is simply dropped).
    Result<gpgme::Context> acquire() {
        {
            std::lock_guard lock(mutex_);
            if (!idle_.empty()) {
                gpgme::Context context = std::move(idle_.back());
                idle_.pop_back();
                return context;
            }
        }
        auto made = make_context(home_);
        if (made && configure_ != nullptr) configure_(made->get(), hook_);
        return made;
    }

    void release(gpgme::Context context) {
        std::lock_guard lock(mutex_);
        if (idle_.size() < kMaxIdle) idle_.push_back(std::move(context));
    }

    void clear() {
        std::lock_guard lock(mutex_);
        idle_.clear();
    }

private:
    static constexpr std::size_t kMaxIdle = 16;
    const std::string home_;
    const Configure configure_;
    void* const hook_;
    std::mutex mutex_;
    std::vector<gpgme::Context> idle_;
};

namespace {

Result<gpgme::Data> data_from(std::string_view bytes) {   // no copy: `bytes` must outlive the Data
    return gpgme::data_from(bytes, "archive.escrow_engine");
}

Result<gpgme::Data> empty_data() { return gpgme::empty_data("archive.escrow_engine"); }

using gpgme::take_bytes;

bool can_encrypt_now(gpgme_key_t key) {
    if (key->revoked || key->expired || key->disabled || key->invalid) return false;
    for (gpgme_subkey_t subkey = key->subkeys; subkey != nullptr; subkey = subkey->next) {
        if (subkey->can_encrypt && !subkey->revoked && !subkey->expired && !subkey->disabled && !subkey->invalid)
            return true;
    }
    return false;
}

// Imports `bytes` into the context's home; the fingerprints it holds.
struct Imported {
    std::vector<std::string> fingerprints;
    int secret_read = 0;
};

Result<Imported> import_keys(gpgme_ctx_t context, std::string_view bytes, const std::string& path) {
    auto data = data_from(bytes);
    if (!data) return data.error();
    if (gpgme_error_t error = gpgme_op_import(context, data->get()); error != 0)
        return Error::permanent("archive.escrow_key", "cannot import " + path + ": " + gpgme::error_text(error));
    gpgme_import_result_t result = gpgme_op_import_result(context);
    Imported imported;
    if (result == nullptr) return imported;
    imported.secret_read = result->secret_read;
    for (gpgme_import_status_t status = result->imports; status != nullptr; status = status->next) {
        if (status->result != 0 || status->fpr == nullptr) continue;
        std::string fingerprint = status->fpr;
        if (std::find(imported.fingerprints.begin(), imported.fingerprints.end(), fingerprint) ==
            imported.fingerprints.end())
            imported.fingerprints.push_back(std::move(fingerprint));
    }
    return imported;
}

std::string join_lines(const std::vector<std::string>& lines) {
    std::string joined;
    for (const std::string& line : lines) joined += line + "\n";
    return joined;
}

// One encryption; `recipients` holds fingerprints, one per line.
Result<std::string> encrypt_with(gpgme_ctx_t context, const std::string& recipients, std::string_view plaintext) {
    auto input = data_from(plaintext);
    if (!input) return input.error();
    auto output = empty_data();
    if (!output) return output.error();
    auto flags = static_cast<gpgme_encrypt_flags_t>(GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_COMPRESS |
                                                    GPGME_ENCRYPT_NO_ENCRYPT_TO);
    gpgme_error_t error =
        gpgme_op_encrypt_ext(context, nullptr, recipients.c_str(), flags, input->get(), output->get());
    gpgme_encrypt_result_t result = gpgme_op_encrypt_result(context);
    if (error == 0 && result != nullptr && result->invalid_recipients != nullptr)
        error = result->invalid_recipients->reason != 0 ? result->invalid_recipients->reason
                                                        : gpg_error(GPG_ERR_UNUSABLE_PUBKEY);
    if (error != 0) {
        std::string who = result != nullptr && result->invalid_recipients != nullptr &&
                                  result->invalid_recipients->fpr != nullptr
                              ? std::string(" (recipient ") + result->invalid_recipients->fpr + ")"
                              : std::string();
        return Error::temporary("archive.escrow_encrypt", "OpenPGP encryption failed" + who + ": " +
                                                              gpgme::error_text(error));
    }
    return take_bytes(std::move(*output));
}

// --------------------------------------------------------------- decryptor

// Loopback pinentry: gpg-agent asks GPGME, GPGME asks us. A second request
// means the first answer was wrong; give up instead of looping.
gpgme_error_t supply_passphrase(void* hook, const char*, const char*, int previous_was_bad, int fd) {
    if (previous_was_bad) return gpg_error(GPG_ERR_BAD_PASSPHRASE);
    const auto* passphrase = static_cast<const std::string*>(hook);
    if (gpgme_io_writen(fd, passphrase->data(), passphrase->size()) != 0 || gpgme_io_writen(fd, "\n", 1) != 0)
        return gpgme_error_from_syserror();
    return 0;
}

// Runs "gpgconf --homedir <home> --kill all" and waits for it. No shell.
void stop_agents(const std::string& home) {
    const char* gpgconf = gpgme_get_dirinfo("gpgconf-name");
    std::string program = gpgconf != nullptr ? gpgconf : "/usr/bin/gpgconf";
    std::string homedir_flag = "--homedir", kill_flag = "--kill", all = "all";
    std::string home_copy = home;
    char* argv[] = {program.data(), homedir_flag.data(), home_copy.data(), kill_flag.data(), all.data(), nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    if (posix_spawn(&pid, program.c_str(), &actions, nullptr, argv, environ) == 0) {
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    posix_spawn_file_actions_destroy(&actions);
}

// Where the temporary home goes: /dev/shm (RAM) when usable, else $TMPDIR,
// else /tmp; a base too long for the agent's socket path is skipped.
std::string temporary_base() {
    auto usable = [](const std::string& base) {
        struct stat info {};
        return !base.empty() && base.size() <= kMaxTemporaryBaseLength && ::stat(base.c_str(), &info) == 0 &&
               S_ISDIR(info.st_mode) && ::access(base.c_str(), W_OK | X_OK) == 0;
    };
    if (usable("/dev/shm")) return "/dev/shm";
    if (const char* tmpdir = std::getenv("TMPDIR"); tmpdir != nullptr && usable(tmpdir)) return tmpdir;
    return "/tmp";
}

}  // namespace

// ---------------------------------------------------------------- encryptor

EscrowEncryptor::EscrowEncryptor(std::string gnupg_home, std::vector<std::string> fingerprints)
    : gnupg_home_(std::move(gnupg_home)),
      fingerprints_(std::move(fingerprints)),
      recipients_(join_lines(fingerprints_)),
      contexts_(std::make_shared<ContextPool>(gnupg_home_)) {}

Result<EscrowEncryptor> EscrowEncryptor::open(const std::vector<std::string>& public_key_files,
                                              const std::string& gnupg_home) {
    if (!gpgme::ensure_gpgme()) return engine_missing();
    if (public_key_files.empty()) return Error::permanent("archive.escrow_key", "no escrow public key file given");
    if (Status made = make_private_directories(gnupg_home); !made) return made.error();
    auto context = make_context(gnupg_home);
    if (!context) return context.error();

    std::vector<std::string> fingerprints;
    for (const std::string& path : public_key_files) {
        auto bytes = read_key_file(path);
        if (!bytes) return bytes.error();
        if (looks_like_secret_key(*bytes)) {
            return Error::permanent("archive.escrow_key", path + " holds a secret key; the gateway takes only the "
                                                                 "escrow public key (gpg --export)");
        }
        auto imported = import_keys(context->get(), *bytes, path);
        if (!imported) return imported.error();
        if (imported->secret_read > 0) {
            return Error::permanent("archive.escrow_key", path + " holds a secret key; the gateway takes only the "
                                                                 "escrow public key (gpg --export)");
        }
        std::size_t usable = 0;
        for (const std::string& fingerprint : imported->fingerprints) {
            gpgme_key_t raw = nullptr;
            if (gpgme_get_key(context->get(), fingerprint.c_str(), &raw, 0) != 0 || raw == nullptr) continue;
            gpgme::Key key(raw);
            if (!can_encrypt_now(key.get())) continue;
            ++usable;
            if (std::find(fingerprints.begin(), fingerprints.end(), fingerprint) == fingerprints.end())
                fingerprints.push_back(fingerprint);
        }
        if (usable == 0) {
            return Error::permanent("archive.escrow_key",
                                    path + " holds no OpenPGP public key that can encrypt (none, revoked, expired, "
                                           "or without an encryption subkey)");
        }
    }
    // gpg --import starts a gpg-agent in the home; public-key work never
    // needs it, so do not leave a daemon behind.
    stop_agents(gnupg_home);
    return EscrowEncryptor(gnupg_home, std::move(fingerprints));
}

Result<std::string> EscrowEncryptor::encrypt(std::string_view plaintext) const {
    auto context = contexts_->acquire();
    if (!context) return context.error();
    auto ciphertext = encrypt_with(context->get(), recipients_, plaintext);
    if (ciphertext) contexts_->release(std::move(*context));
    return ciphertext;
}

// ---------------------------------------------------------------- decryptor

class EscrowDecryptor::Home {
public:
    Home(std::string path, std::string passphrase)
        : path(std::move(path)), passphrase(std::move(passphrase)), contexts(this->path, answer_passphrases, this) {}
    ~Home() {
        contexts.clear();
        stop_agents(path);
        // The agent may still be removing its sockets as we remove the tree.
        std::error_code ignored;
        for (int attempt = 0; attempt < 20 && fs::exists(path, ignored); ++attempt) {
            if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            fs::remove_all(path, ignored);
        }
        OPENSSL_cleanse(passphrase.data(), passphrase.size());
    }
    Home(const Home&) = delete;
    Home& operator=(const Home&) = delete;

    // Contexts on this home answer passphrase requests themselves.
    static void answer_passphrases(gpgme_ctx_t context, void* hook) {
        gpgme_set_pinentry_mode(context, GPGME_PINENTRY_MODE_LOOPBACK);
        gpgme_set_passphrase_cb(context, supply_passphrase, &static_cast<Home*>(hook)->passphrase);
    }

    const std::string path;
    std::string passphrase;
    ContextPool contexts;   // declared last: built from the members above
};

EscrowDecryptor::EscrowDecryptor(std::unique_ptr<Home> home) : home_(std::move(home)) {}
EscrowDecryptor::EscrowDecryptor(EscrowDecryptor&&) noexcept = default;
EscrowDecryptor& EscrowDecryptor::operator=(EscrowDecryptor&&) noexcept = default;
EscrowDecryptor::~EscrowDecryptor() = default;

const std::string& EscrowDecryptor::gnupg_home() const {
    static const std::string none;
    return home_ ? home_->path : none;
}

Result<EscrowDecryptor> EscrowDecryptor::open(const std::string& secret_key_file, const std::string& passphrase) {
    if (!gpgme::ensure_gpgme()) return engine_missing();
    auto bytes = read_key_file(secret_key_file);
    if (!bytes) return bytes.error();
    struct WipeOnExit {
        std::string& secret;
        ~WipeOnExit() { OPENSSL_cleanse(secret.data(), secret.size()); }
    } wipe_bytes{*bytes};

    // The process id in the name tells an operator whose home it is (and lets a test
    // tell its own homes from those of other processes sharing /dev/shm).
    std::string pattern = temporary_base() + "/postvault-escrow-" + std::to_string(::getpid()) + "-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)   // mkdtemp makes it 0700
        return Error::temporary("archive.escrow_home", "cannot create " + pattern + ": " + std::strerror(errno));
    auto home = std::make_unique<Home>(pattern, passphrase);   // from here on, ~Home cleans up

    auto context = home->contexts.acquire();
    if (!context) return context.error();
    auto imported = import_keys(context->get(), *bytes, secret_key_file);
    if (!imported) return imported.error();
    if (imported->secret_read == 0 || imported->fingerprints.empty())
        return Error::permanent("archive.escrow_key", secret_key_file + " holds no OpenPGP secret key");

    // Round trip now, so a wrong passphrase or a key without its encryption
    // secret fails here and not in the middle of an export.
    auto probe = encrypt_with(context->get(), join_lines(imported->fingerprints), kSelfTestText);
    if (!probe) return probe.error();
    home->contexts.release(std::move(*context));
    EscrowDecryptor decryptor(std::move(home));
    auto round_trip = decryptor.decrypt(*probe);
    if (!round_trip) {
        return Error::permanent("archive.escrow_decrypt", "the secret key in " + secret_key_file +
                                                              " does not decrypt (wrong passphrase?): " +
                                                              round_trip.error().message);
    }
    if (*round_trip != kSelfTestText)
        return Error::permanent("archive.escrow_decrypt", "self-test round trip returned other bytes");
    return decryptor;
}

Result<std::string> EscrowDecryptor::decrypt(std::string_view ciphertext) const {
    if (!home_) return Error::permanent("archive.escrow_decrypt", "decryptor was moved from");
    auto context = home_->contexts.acquire();
    if (!context) return context.error();
    auto input = data_from(ciphertext);
    if (!input) return input.error();
    auto output = empty_data();
    if (!output) return output.error();
    if (gpgme_error_t error = gpgme_op_decrypt(context->get(), input->get(), output->get()); error != 0)
        return Error::permanent("archive.escrow_decrypt", "OpenPGP decryption failed: " + gpgme::error_text(error));
    home_->contexts.release(std::move(*context));
    return take_bytes(std::move(*output));
}

}  // namespace postvault::archive
