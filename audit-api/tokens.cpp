// audit-api/tokens.cpp — see tokens.h.
#include "audit-api/tokens.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "archive/archive.h"
#include "archive/chain.h"
#include "common/mail.h"

namespace postvault::api {

namespace {

constexpr std::array kRoleNames = {"admin", "auditor", "legal", "reviewer"};

std::string base64url(const unsigned char* bytes, std::size_t size) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::uint32_t buffer = 0;
    int bits = 0;
    for (std::size_t i = 0; i < size; ++i) {
        buffer = (buffer << 8) | bytes[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out += alphabet[(buffer >> bits) & 0x3f];
        }
    }
    if (bits > 0) out += alphabet[(buffer << (6 - bits)) & 0x3f];
    return out;
}

bool valid_name(const std::string& name) {
    if (name.empty() || name.size() > 64) return false;
    return std::all_of(name.begin(), name.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '@';
    });
}

// An exclusive flock() on a lock file beside the store, for as long as it lives.
class FileLock {
public:
    explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
        if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    ~FileLock() {
        if (fd_ >= 0) ::close(fd_);
    }
    bool held() const { return fd_ >= 0; }
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;

private:
    int fd_;
};

Token token_from_json(const nlohmann::json& j) {
    Token token;
    token.name = j.value("name", std::string());
    auto role = parse_role(j.value("role", std::string()));
    token.role = role ? *role : Role::reviewer;  // an unknown role gets the least
    token.hash = j.value("hash", std::string());
    token.created = j.value("created", std::int64_t{0});
    token.expires = j.value("expires", std::int64_t{0});
    token.revoked = j.value("revoked", std::int64_t{0});
    token.custodians = j.value("custodians", std::vector<std::string>{});
    token.domains = j.value("domains", std::vector<std::string>{});
    return token;
}

}  // namespace

Result<Role> parse_role(std::string_view name) {
    for (std::size_t i = 0; i < kRoleNames.size(); ++i)
        if (name == kRoleNames[i]) return static_cast<Role>(i);
    return Error::permanent("token.invalid", "unknown role '" + std::string(name) +
                                                 "' (admin, auditor, legal or reviewer)");
}

std::string_view role_name(Role role) { return kRoleNames[static_cast<std::size_t>(role)]; }

nlohmann::json to_json(const Token& token) {
    nlohmann::json j = {{"name", token.name},       {"role", role_name(token.role)},
                        {"created", token.created}, {"expires", token.expires},
                        {"revoked", token.revoked}};
    if (token.role == Role::reviewer) {
        j["custodians"] = token.custodians;
        j["domains"] = token.domains;
    }
    return j;
}

TokenStore::TokenStore(std::string path) : path_(std::move(path)) {}

Status TokenStore::load_if_changed() {
    struct stat info {};
    if (::stat(path_.c_str(), &info) != 0) {
        if (errno != ENOENT) return Error::temporary("token.io", "cannot read " + path_ + ": " + std::strerror(errno));
        tokens_.clear();
        loaded_mtime_ns_ = 0;
        loaded_size_ = 0;
        return Status::success();
    }
    const std::int64_t mtime = static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec;
    if (mtime == loaded_mtime_ns_ && info.st_size == loaded_size_) return Status::success();
    std::ifstream in(path_, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return Error::temporary("token.io", "cannot read " + path_);
    auto parsed = nlohmann::json::parse(text.str(), nullptr, false);
    if (parsed.is_discarded() || !parsed.contains("tokens") || !parsed["tokens"].is_array())
        return Error::permanent("token.io", path_ + " is not a token file");
    std::vector<Token> tokens;
    for (const auto& entry : parsed["tokens"]) tokens.push_back(token_from_json(entry));
    tokens_ = std::move(tokens);
    loaded_mtime_ns_ = mtime;
    loaded_size_ = info.st_size;
    return Status::success();
}

Status TokenStore::save() {
    nlohmann::json out = {{"tokens", nlohmann::json::array()}};
    for (const auto& token : tokens_) {
        nlohmann::json j = to_json(token);
        j["hash"] = token.hash;
        j["custodians"] = token.custodians;
        j["domains"] = token.domains;
        out["tokens"].push_back(std::move(j));
    }
    const std::string text = out.dump(2) + "\n";
    const std::string temporary = path_ + ".tmp";
    std::error_code ignored;
    std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ignored);
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Error::temporary("token.io", "cannot write " + temporary + ": " + std::strerror(errno));
    bool ok = ::fchmod(fd, 0600) == 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
              ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(temporary.c_str(), path_.c_str()) != 0) {
        ::unlink(temporary.c_str());
        return Error::temporary("token.io", "cannot write " + path_ + ": " + std::strerror(errno));
    }
    loaded_mtime_ns_ = -1;  // re-stat on the next read
    return Status::success();
}

Result<NewToken> TokenStore::create(const std::string& name, Role role, std::int64_t expires,
                                    std::vector<std::string> custodians, std::vector<std::string> domains) {
    if (!valid_name(name))
        return Error::permanent("token.invalid", "a token name is 1 to 64 letters, digits, '-', '_', '.' or '@'");
    if (role == Role::reviewer && custodians.empty() && domains.empty())
        return Error::permanent("token.invalid", "a reviewer token needs --custodian or --domain (what it may see)");
    if (role != Role::reviewer && (!custodians.empty() || !domains.empty()))
        return Error::permanent("token.invalid", "--custodian and --domain apply to reviewer tokens only");
    const std::int64_t now = std::time(nullptr);
    if (expires != 0 && expires <= now) return Error::permanent("token.invalid", "the expiry is in the past");
    for (auto& c : custodians) c = lowercase(c);
    for (auto& d : domains) d = lowercase(d);

    std::lock_guard lock(mutex_);
    FileLock file_lock(path_ + ".lock");  // one writer across processes too (a CLI beside a stopped server)
    if (!file_lock.held()) return Error::temporary("token.io", "cannot lock " + path_ + ".lock");
    if (auto loaded = load_if_changed(); !loaded) return loaded.error();
    for (const auto& token : tokens_)
        if (token.name == name && token.revoked == 0)
            return Error::permanent("token.exists", "a token named '" + name + "' exists (revoke it first)");

    unsigned char random[32];
    if (RAND_bytes(random, sizeof random) != 1) return Error::temporary("token.io", "no randomness");
    NewToken made;
    made.secret = "pvt_" + base64url(random, sizeof random);
    OPENSSL_cleanse(random, sizeof random);
    made.token.name = name;
    made.token.role = role;
    made.token.hash = archive::to_hex(archive::sha256(made.secret));
    made.token.created = now;
    made.token.expires = expires;
    made.token.custodians = std::move(custodians);
    made.token.domains = std::move(domains);
    tokens_.push_back(made.token);
    if (auto saved = save(); !saved) {
        tokens_.pop_back();
        return saved.error();
    }
    return made;
}

Result<std::vector<Token>> TokenStore::list() {
    std::lock_guard lock(mutex_);
    if (auto loaded = load_if_changed(); !loaded) return loaded.error();
    return tokens_;
}

Status TokenStore::revoke(const std::string& name) {
    std::lock_guard lock(mutex_);
    FileLock file_lock(path_ + ".lock");
    if (!file_lock.held()) return Error::temporary("token.io", "cannot lock " + path_ + ".lock");
    if (auto loaded = load_if_changed(); !loaded) return loaded.error();
    for (auto& token : tokens_)
        if (token.name == name && token.revoked == 0) {
            token.revoked = std::time(nullptr);
            return save();
        }
    return Error::permanent("token.not_found", "no live token named '" + name + "'");
}

std::optional<Token> TokenStore::authenticate(std::string_view secret, std::int64_t now) {
    if (secret.size() != 47 || secret.substr(0, 4) != "pvt_") return std::nullopt;
    const std::string hash = archive::to_hex(archive::sha256(secret));
    std::lock_guard lock(mutex_);
    if (!load_if_changed()) return std::nullopt;
    for (const auto& token : tokens_) {
        if (token.hash.size() != hash.size() || CRYPTO_memcmp(token.hash.data(), hash.data(), hash.size()) != 0)
            continue;
        if (token.revoked != 0 || (token.expires != 0 && token.expires <= now)) return std::nullopt;
        return token;
    }
    return std::nullopt;
}

Result<NewToken> create_token_on_record(TokenStore& tokens, archive::Archive& archive, const std::string& name,
                                        Role role, std::int64_t expires, std::vector<std::string> custodians,
                                        std::vector<std::string> domains, const std::string& actor) {
    auto made = tokens.create(name, role, expires, std::move(custodians), std::move(domains));
    if (!made) return made.error();
    nlohmann::json detail = to_json(made->token);
    detail["action"] = "create";
    if (auto recorded = archive.record_event("token", name, actor, detail.dump()); !recorded) {
        (void)tokens.revoke(name);
        return recorded.error();
    }
    return made;
}

Status revoke_token_on_record(TokenStore& tokens, archive::Archive& archive, const std::string& name,
                              const std::string& actor) {
    if (auto revoked = tokens.revoke(name); !revoked) return revoked;
    return archive.record_event("token", name, actor, nlohmann::json{{"action", "revoke"}}.dump());
}

}  // namespace postvault::api
