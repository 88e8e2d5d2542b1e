// archive/keys.cpp — KEK file handling and per-blob envelope encryption.
// The formats are described in keys.h.
#include "archive/keys.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>
#include <memory>

#include "common/base64.h"
#include "common/log.h"
#include "common/openssl.h"

namespace postvault::archive {

namespace {

constexpr std::size_t kKeySize = 32;         // AES-256, for KEKs and data keys
constexpr std::size_t kNonceSize = 12;       // GCM nonce
constexpr std::size_t kTagSize = 16;         // GCM tag
constexpr std::size_t kWrappedSize = kKeySize + 8;   // RFC 3394 adds one block
constexpr std::size_t kMaxKeyFileSize = 1 << 20;
constexpr std::size_t kMaxIdLength = 64;
constexpr std::string_view kFileHeader = "postvault-kek-file 1";
constexpr std::string_view kWrappedPrefix = "dek1:";
constexpr int kChunk = 1 << 30;              // EVP takes int lengths

using KeyBytes = std::array<unsigned char, kKeySize>;
using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, openssl::Deleter<EVP_CIPHER_CTX_free>>;

struct Kek {
    std::string id;
    KeyBytes key{};
};

// Wipes a key buffer when it goes out of scope, whatever the return path.
class CleanseOnExit {
public:
    CleanseOnExit(void* memory, std::size_t size) : memory_(memory), size_(size) {}
    ~CleanseOnExit() { OPENSSL_cleanse(memory_, size_); }
    CleanseOnExit(const CleanseOnExit&) = delete;
    CleanseOnExit& operator=(const CleanseOnExit&) = delete;

private:
    void* memory_;
    std::size_t size_;
};

// The two ciphers, fetched once per process (an implicit fetch on every
// EVP_EncryptInit would take the provider's lock each call). Never freed:
// they must outlive every thread that might still seal at exit.
struct Ciphers {
    EVP_CIPHER* gcm = nullptr;
    EVP_CIPHER* wrap = nullptr;
};

const Ciphers& ciphers() {
    static const Ciphers fetched = [] {
        Ciphers c;
        c.gcm = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
        c.wrap = EVP_CIPHER_fetch(nullptr, "AES-256-WRAP", nullptr);
        return c;
    }();
    return fetched;
}

Error crypto_error(std::string_view what) {
    return Error::temporary("archive.crypto", std::string(what) + ": " + openssl::error_text());
}

Error errno_error(std::string code, std::string_view what, const std::string& path, int error_number) {
    return Error::temporary(std::move(code), std::string(what) + " " + path + ": " + std::strerror(error_number));
}

bool is_valid_id(std::string_view id) {
    if (id.empty() || id.size() > kMaxIdLength) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == '-';
    });
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

// ---------------------------------------------------------------- the file

// A file descriptor that closes itself.
class FileDescriptor {
public:
    explicit FileDescriptor(int fd = -1) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }

private:
    int fd_;
};

// Exclusive flock on "<path>.lock" for create and rotate, across processes.
Result<std::shared_ptr<FileDescriptor>> lock_key_file(const std::string& path) {
    std::string lock_path = path + ".lock";
    auto fd = std::make_shared<FileDescriptor>(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (fd->get() < 0) return errno_error("archive.key_io", "cannot open lock file", lock_path, errno);
    while (::flock(fd->get(), LOCK_EX) != 0) {
        if (errno != EINTR) return errno_error("archive.key_io", "cannot lock", lock_path, errno);
    }
    return fd;   // closing the descriptor releases the lock
}

// Creates the missing directories of `directory`, each 0700.
Status make_private_directories(const std::filesystem::path& directory) {
    if (directory.empty()) return Status::success();
    std::filesystem::path prefix;
    for (const auto& part : directory) {
        prefix /= part;
        if (::mkdir(prefix.c_str(), 0700) == 0) {
            ::chmod(prefix.c_str(), 0700);   // in case the umask took bits away
        } else if (errno != EEXIST) {
            return errno_error("archive.key_io", "cannot create directory", prefix.string(), errno);
        }
    }
    struct stat info {};
    if (::stat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode))
        return Error::permanent("archive.key_io", directory.string() + " is not a directory");
    return Status::success();
}

Result<std::vector<Kek>> parse_key_file(const std::string& text, const std::string& path) {
    std::vector<Kek> keks;
    bool saw_header = false;
    std::size_t line_number = 0;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        std::string_view line(text.data() + start, end - start);
        start = end + 1;
        ++line_number;
        auto malformed = [&](std::string_view why) {
            return Error::permanent("archive.key_file",
                                    path + ":" + std::to_string(line_number) + ": " + std::string(why));
        };
        if (line.empty() || line.front() == '#') continue;
        if (!saw_header) {
            if (line != kFileHeader) return malformed("expected \"" + std::string(kFileHeader) + "\"");
            saw_header = true;
            continue;
        }
        std::size_t space = line.find(' ');
        if (space == std::string_view::npos) return malformed("expected \"<id> <base64 key>\"");
        std::string_view id = line.substr(0, space);
        if (!is_valid_id(id)) return malformed("bad key id");
        if (std::any_of(keks.begin(), keks.end(), [&](const Kek& k) { return k.id == id; }))
            return malformed("duplicate key id " + std::string(id));
        std::optional<std::string> key = decode_base64(line.substr(space + 1));
        if (!key || key->size() != kKeySize) {
            if (key) OPENSSL_cleanse(key->data(), key->size());
            return malformed("key " + std::string(id) + " is not 32 bytes of base64");
        }
        Kek& kek = keks.emplace_back();
        kek.id = std::string(id);
        std::memcpy(kek.key.data(), key->data(), kKeySize);
        OPENSSL_cleanse(key->data(), key->size());
    }
    if (!saw_header) return Error::permanent("archive.key_file", path + ": empty KEK file");
    if (keks.empty()) return Error::permanent("archive.key_file", path + ": no KEK in file");
    return keks;
}

void wipe(std::vector<Kek>& keks) {
    for (Kek& kek : keks) OPENSSL_cleanse(kek.key.data(), kek.key.size());
}

// Reads and parses the KEK file, refusing one that others could read.
Result<std::vector<Kek>> read_key_file(const std::string& path) {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        int error_number = errno;
        if (error_number == ENOENT) return Error::permanent("archive.key_file", "KEK file " + path + " does not exist");
        return Error::permanent("archive.key_file",
                                "cannot open KEK file " + path + ": " + std::strerror(error_number));
    }
    struct stat info {};
    if (::fstat(fd.get(), &info) != 0) return errno_error("archive.key_file", "cannot stat", path, errno);
    if (!S_ISREG(info.st_mode)) return Error::permanent("archive.key_mode", path + " is not a regular file");
    if ((info.st_mode & 077) != 0) {
        return Error::permanent("archive.key_mode",
                                "KEK file " + path + " has mode " + mode_text(info.st_mode) +
                                    " and is open to group or others; it holds the archive's keys: "
                                    "chmod 600 " + path);
    }
    if (static_cast<std::size_t>(info.st_size) > kMaxKeyFileSize)
        return Error::permanent("archive.key_file", path + ": too large for a KEK file");

    std::string text(static_cast<std::size_t>(info.st_size), '\0');
    CleanseOnExit wipe_text(text.data(), text.size());
    std::size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::read(fd.get(), text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("archive.key_file", "cannot read", path, errno);
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    text.resize(done);   // shrinking keeps the buffer, which wipe_text still covers
    return parse_key_file(text, path);
}

// 0, or the errno of the failed write.
int write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno;
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return 0;
}

// Temp file 0600 in the same directory, fsync, rename over `path`, fsync the
// directory: after a crash the file is either the old one or the new one.
Status write_key_file(const std::string& path, const std::vector<Kek>& keks) {
    std::string text = std::string(kFileHeader) +
                       "\n# postvault archive key-encryption keys; the last one is current.\n"
                       "# Secret: keep mode 0600 and back up; losing a key loses the data sealed under it.\n";
    for (const Kek& kek : keks) {
        std::string encoded = encode_base64(std::string_view(reinterpret_cast<const char*>(kek.key.data()), kKeySize));
        text += kek.id + " " + encoded + "\n";
        OPENSSL_cleanse(encoded.data(), encoded.size());
    }
    CleanseOnExit wipe_text(text.data(), text.size());

    std::filesystem::path target(path);
    std::filesystem::path directory = target.parent_path();
    if (directory.empty()) directory = ".";
    std::string temp_path = (directory / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
    FileDescriptor fd(::mkstemp(temp_path.data()));   // mkstemp creates 0600
    if (fd.get() < 0) return errno_error("archive.key_io", "cannot create temporary file in", directory.string(), errno);
    auto fail = [&](std::string_view what, int error_number) -> Status {
        ::unlink(temp_path.c_str());
        return errno_error("archive.key_io", what, temp_path, error_number);
    };
    if (::fchmod(fd.get(), 0600) != 0) return fail("cannot chmod", errno);
    if (int error_number = write_all(fd.get(), text); error_number != 0) return fail("cannot write", error_number);
    if (::fsync(fd.get()) != 0) return fail("cannot fsync", errno);
    if (::close(fd.release()) != 0) return fail("cannot close", errno);
    if (::rename(temp_path.c_str(), path.c_str()) != 0) return fail("cannot rename to " + path + ":", errno);
    FileDescriptor directory_fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (directory_fd.get() < 0 || ::fsync(directory_fd.get()) != 0)
        return errno_error("archive.key_io", "cannot fsync directory", directory.string(), errno);
    return Status::success();
}

Result<Kek> generate_kek(std::string id) {
    Kek kek;
    kek.id = std::move(id);
    if (RAND_bytes(kek.key.data(), static_cast<int>(kek.key.size())) != 1) return crypto_error("RAND_bytes");
    return kek;
}

// "kek-<N+1>" for the largest N among ids of the form "kek-<N>".
std::string next_kek_id(const std::vector<Kek>& keks) {
    unsigned long largest = 0;
    for (const Kek& kek : keks) {
        std::string_view id = kek.id;
        if (id.substr(0, 4) != "kek-") continue;
        unsigned long number = 0;
        auto [end, error] = std::from_chars(id.data() + 4, id.data() + id.size(), number);
        if (error == std::errc() && end == id.data() + id.size()) largest = std::max(largest, number);
    }
    return "kek-" + std::to_string(largest + 1);
}

// ---------------------------------------------------------------- GCM

// AES-256-GCM over `input` into `output` (same length), `aad` authenticated.
bool gcm_crypt(bool encrypt, const unsigned char* key, const unsigned char* nonce, std::string_view aad,
               const unsigned char* input, std::size_t size, unsigned char* output, unsigned char* tag) {
    CipherContext context(EVP_CIPHER_CTX_new());
    if (!context) return false;
    EVP_CIPHER_CTX* ctx = context.get();
    int length = 0;
    if (EVP_CipherInit_ex2(ctx, ciphers().gcm, key, nonce, encrypt ? 1 : 0, nullptr) != 1) return false;
    if (!aad.empty() && EVP_CipherUpdate(ctx, nullptr, &length, reinterpret_cast<const unsigned char*>(aad.data()),
                                         static_cast<int>(aad.size())) != 1)
        return false;
    for (std::size_t done = 0; done < size;) {
        int step = static_cast<int>(std::min<std::size_t>(size - done, kChunk));
        if (EVP_CipherUpdate(ctx, output + done, &length, input + done, step) != 1) return false;
        done += static_cast<std::size_t>(step);
    }
    if (!encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize), tag) != 1) return false;
    if (EVP_CipherFinal_ex(ctx, output + size, &length) != 1) return false;   // GCM: no bytes; checks the tag
    if (encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize), tag) != 1) return false;
    return true;
}

// AES key wrap (RFC 3394) of a 32-byte key: 40 bytes out, or 32 back in.
bool key_wrap(bool wrap, const KeyBytes& kek, const unsigned char* input, std::size_t size, unsigned char* output,
              int& output_length) {
    CipherContext context(EVP_CIPHER_CTX_new());
    if (!context) return false;
    EVP_CIPHER_CTX_set_flags(context.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    if (EVP_CipherInit_ex2(context.get(), ciphers().wrap, kek.data(), nullptr, wrap ? 1 : 0, nullptr) != 1)
        return false;
    if (EVP_CipherUpdate(context.get(), output, &output_length, input, static_cast<int>(size)) != 1) return false;
    int final_length = 0;
    if (EVP_CipherFinal_ex(context.get(), output + output_length, &final_length) != 1) return false;
    output_length += final_length;
    return true;
}

}  // namespace

// The KEKs of one file, oldest first; shared read-only by KeyRing copies.
class KeyTable {
public:
    KeyTable(std::string path, std::vector<Kek> keks) : path(std::move(path)), keks(std::move(keks)) {}
    ~KeyTable() { wipe(keks); }
    KeyTable(const KeyTable&) = delete;
    KeyTable& operator=(const KeyTable&) = delete;

    const Kek* find(std::string_view id) const {
        for (const Kek& kek : keks)
            if (kek.id == id) return &kek;
        return nullptr;
    }

    std::string path;
    std::vector<Kek> keks;   // never empty
};

namespace {

Result<std::shared_ptr<const KeyTable>> make_table(const std::string& path, Result<std::vector<Kek>> keks) {
    if (!keks) return keks.error();
    if (!ciphers().gcm || !ciphers().wrap) {
        wipe(*keks);
        return crypto_error("cannot fetch AES-256-GCM / AES-256-WRAP");
    }
    return std::shared_ptr<const KeyTable>(std::make_shared<KeyTable>(path, std::move(*keks)));
}

}  // namespace

Result<KeyRing> KeyRing::load(const std::string& path) {
    auto table = make_table(path, read_key_file(path));
    if (!table) return table.error();
    return KeyRing(std::move(*table));
}

Result<KeyRing> KeyRing::create_or_load(const std::string& path) {
    std::filesystem::path directory = std::filesystem::path(path).parent_path();
    if (Status made = make_private_directories(directory); !made) return made.error();
    auto lock = lock_key_file(path);   // a concurrent creator must not write a second kek-1
    if (!lock) return lock.error();

    struct stat info {};
    if (::stat(path.c_str(), &info) == 0 || errno != ENOENT) return load(path);

    auto first = generate_kek("kek-1");
    if (!first) return first.error();
    std::vector<Kek> keks;
    keks.push_back(std::move(*first));
    OPENSSL_cleanse(first->key.data(), first->key.size());
    if (Status written = write_key_file(path, keks); !written) {
        wipe(keks);
        return written.error();
    }
    auto table = make_table(path, std::move(keks));
    if (!table) return table.error();
    return KeyRing(std::move(*table));
}

Result<std::string> KeyRing::rotate() {
    const std::string& path = table_->path;
    auto lock = lock_key_file(path);
    if (!lock) return lock.error();

    // Start from the file as it is now, so a rotation by another process
    // since we loaded is kept; then add any key we hold that the file lacks.
    auto on_disk = read_key_file(path);
    if (!on_disk) return on_disk.error();
    std::vector<Kek> keks = std::move(*on_disk);
    for (const Kek& held : table_->keks) {
        const Kek* same_id = nullptr;
        for (const Kek& kek : keks)
            if (kek.id == held.id) same_id = &kek;
        if (same_id == nullptr) {
            keks.push_back(held);
        } else if (CRYPTO_memcmp(same_id->key.data(), held.key.data(), kKeySize) != 0) {
            wipe(keks);
            return Error::permanent("archive.key_file", path + ": key " + held.id +
                                                            " on disk differs from the one loaded; refusing to rotate");
        }
    }
    auto fresh = generate_kek(next_kek_id(keks));
    if (!fresh) {
        wipe(keks);
        return fresh.error();
    }
    std::string new_id = fresh->id;
    keks.push_back(std::move(*fresh));
    OPENSSL_cleanse(fresh->key.data(), fresh->key.size());
    if (Status written = write_key_file(path, keks); !written) {
        wipe(keks);
        return written.error();
    }
    auto table = make_table(path, std::move(keks));
    if (!table) return table.error();
    table_ = std::move(*table);
    return new_id;
}

const std::string& KeyRing::current_id() const { return table_->keks.back().id; }

std::vector<std::string> KeyRing::ids() const {
    std::vector<std::string> ids;
    for (const Kek& kek : table_->keks) ids.push_back(kek.id);
    return ids;
}

const std::string& KeyRing::path() const { return table_->path; }

Result<SealedBlob> KeyRing::seal(std::string_view plaintext, std::string_view blob_id) const {
    const Kek& kek = table_->keks.back();
    // Data key and nonce from one RAND_bytes call: in OpenSSL 3.0 each call
    // costs about as much as the whole AES-GCM pass over a 10 KB blob.
    std::array<unsigned char, kKeySize + kNonceSize> fresh{};
    CleanseOnExit wipe_data_key(fresh.data(), fresh.size());
    if (RAND_bytes(fresh.data(), static_cast<int>(fresh.size())) != 1) return crypto_error("RAND_bytes");
    const unsigned char* data_key = fresh.data();

    SealedBlob sealed;
    sealed.ciphertext.resize(kNonceSize + plaintext.size() + kTagSize);
    auto* out = reinterpret_cast<unsigned char*>(sealed.ciphertext.data());
    std::memcpy(out, fresh.data() + kKeySize, kNonceSize);
    if (!gcm_crypt(true, data_key, out, blob_id, reinterpret_cast<const unsigned char*>(plaintext.data()),
                   plaintext.size(), out + kNonceSize, out + kNonceSize + plaintext.size()))
        return crypto_error("AES-256-GCM seal");

    std::array<unsigned char, kWrappedSize + 16> wrapped{};   // room for EVP's block slack
    int wrapped_length = 0;
    if (!key_wrap(true, kek.key, data_key, kKeySize, wrapped.data(), wrapped_length) ||
        wrapped_length != static_cast<int>(kWrappedSize))
        return crypto_error("AES-256 key wrap");
    sealed.wrapped_key = std::string(kWrappedPrefix) + kek.id + ":" +
                         encode_base64(std::string_view(reinterpret_cast<const char*>(wrapped.data()), kWrappedSize));
    return sealed;
}

Result<std::string> KeyRing::open(std::string_view wrapped_key, std::string_view ciphertext,
                                  std::string_view blob_id) const {
    auto corrupt = [&](std::string_view why) {
        return Error::permanent("archive.corrupt", "blob " + printable(blob_id) + ": " + std::string(why));
    };
    if (wrapped_key.substr(0, kWrappedPrefix.size()) != kWrappedPrefix)
        return corrupt("wrapped key does not start with \"dek1:\"");
    std::string_view rest = wrapped_key.substr(kWrappedPrefix.size());
    std::size_t colon = rest.find(':');
    if (colon == std::string_view::npos || !is_valid_id(rest.substr(0, colon)))
        return corrupt("wrapped key has no valid KEK id");
    std::string_view kek_id = rest.substr(0, colon);
    std::optional<std::string> wrapped = decode_base64(rest.substr(colon + 1));
    if (!wrapped || wrapped->size() != kWrappedSize) return corrupt("wrapped key is not 40 bytes of base64");
    if (ciphertext.size() < kNonceSize + kTagSize) return corrupt("ciphertext shorter than nonce and tag");

    const Kek* kek = table_->find(kek_id);
    if (kek == nullptr) {
        return Error::permanent("archive.unknown_kek", "blob " + printable(blob_id) + " is sealed under KEK " +
                                                           std::string(kek_id) + ", which " + table_->path +
                                                           " does not hold");
    }

    std::array<unsigned char, kKeySize + 16> data_key{};
    CleanseOnExit wipe_data_key(data_key.data(), data_key.size());
    int key_length = 0;
    if (!key_wrap(false, kek->key, reinterpret_cast<const unsigned char*>(wrapped->data()), wrapped->size(),
                  data_key.data(), key_length) ||
        key_length != static_cast<int>(kKeySize)) {
        ERR_clear_error();
        return Error::permanent("archive.auth_failed", "blob " + printable(blob_id) + ": the wrapped key does not "
                                                       "unwrap under KEK " + std::string(kek_id) + " (tampered)");
    }

    std::size_t size = ciphertext.size() - kNonceSize - kTagSize;
    const auto* in = reinterpret_cast<const unsigned char*>(ciphertext.data());
    std::array<unsigned char, kTagSize> tag{};
    std::memcpy(tag.data(), in + kNonceSize + size, kTagSize);
    std::string plaintext(size, '\0');
    if (!gcm_crypt(false, data_key.data(), in, blob_id, in + kNonceSize, size,
                   reinterpret_cast<unsigned char*>(plaintext.data()), tag.data())) {
        OPENSSL_cleanse(plaintext.data(), plaintext.size());   // never hand out unauthenticated bytes
        ERR_clear_error();
        return Error::permanent("archive.auth_failed", "blob " + printable(blob_id) +
                                                           ": authentication tag mismatch (tampered, or wrong blob id)");
    }
    return plaintext;
}

}  // namespace postvault::archive
