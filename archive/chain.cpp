// archive/chain.cpp — hash chain, Merkle tree, checkpoints and proofs.
// See chain.h for the formats; docs/archive-proofs.md for the third party's view.
#include "archive/chain.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "common/base64.h"

namespace postvault::archive {
namespace {

constexpr std::string_view kEntryMagic = "pv1";
constexpr std::string_view kFrontierMagic = "pv-frontier v1";
constexpr std::string_view kCheckpointMagic = "postvault-checkpoint v1\n";
constexpr std::size_t kEd25519SignatureSize = 64;
constexpr std::size_t kMaxKeyFileSize = 64 * 1024;
constexpr std::size_t kMaxPathLength = 64;   // a proof path never exceeds log2(2^64)

using MdContext = std::unique_ptr<EVP_MD_CTX, openssl::Deleter<EVP_MD_CTX_free>>;
using Digest = std::unique_ptr<EVP_MD, openssl::Deleter<EVP_MD_free>>;

// SHA-256 without a digest fetch per call (EVP_sha256() costs ~3x more in
// OpenSSL 3). Fetched once, never freed before exit; immutable after.
const EVP_MD* sha256_method() {
    static const Digest method(EVP_MD_fetch(nullptr, "SHA256", nullptr));
    if (!method) {
        // Without SHA-256 nothing in the archive can work; not a runtime condition.
        std::fprintf(stderr, "postvault: OpenSSL has no SHA256: %s\n", openssl::error_text().c_str());
        std::abort();
    }
    return method.get();
}

Error chain_corrupt(std::string message) {
    return Error::permanent("archive.chain_corrupt", std::move(message));
}
Error checkpoint_corrupt(std::string message) {
    return Error::permanent("archive.checkpoint_corrupt", std::move(message));
}
Error proof_invalid(std::string message) {
    return Error::permanent("archive.proof_invalid", std::move(message));
}

// Splits on single spaces; empty tokens are kept (and later rejected).
std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        std::size_t end = text.find(separator, start);
        if (end == std::string_view::npos) {
            parts.push_back(text.substr(start));
            return parts;
        }
        parts.push_back(text.substr(start, end - start));
        start = end + 1;
    }
}

template <typename Integer>
bool parse_integer(std::string_view text, Integer& value) {
    if (text.empty()) return false;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    return error == std::errc() && end == text.data() + text.size();
}

// ---- entry line fields ----

bool needs_escape(unsigned char byte) {
    return byte <= 0x20 || byte == '%' || byte == 0x7f || byte >= 0x80;
}

void append_field(std::string& line, std::string_view field) {
    static constexpr char kHexDigits[] = "0123456789ABCDEF";
    line += ' ';
    if (field.empty()) {
        line += '-';
        return;
    }
    if (field == "-") {
        line += "%2D";
        return;
    }
    for (char c : field) {
        auto byte = static_cast<unsigned char>(c);
        if (needs_escape(byte)) {
            line += '%';
            line += kHexDigits[byte >> 4];
            line += kHexDigits[byte & 0x0f];
        } else {
            line += c;
        }
    }
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Undoes append_field loosely; decode_entry's re-encoding check makes it strict.
bool unescape_field(std::string_view token, std::string& field) {
    field.clear();
    if (token == "-") return true;
    for (std::size_t i = 0; i < token.size(); ++i) {
        if (token[i] != '%') {
            field += token[i];
            continue;
        }
        if (i + 2 >= token.size()) return false;
        int high = hex_value(token[i + 1]);
        int low = hex_value(token[i + 2]);
        if (high < 0 || low < 0) return false;
        field += static_cast<char>(high * 16 + low);
        i += 2;
    }
    return true;
}

// ---- Merkle tree ----

// Largest power of two strictly below n (n >= 2): the RFC 6962 split point.
std::uint64_t split_point(std::uint64_t n) {
    return std::bit_floor(n - 1);
}

// MTH over the leaves made from entry_hashes[0, count), count >= 1; recursion
// depth is log2(count).
Hash subtree_root(const Hash* entry_hashes, std::uint64_t count) {
    if (count == 1) return merkle_leaf_hash(entry_hashes[0]);
    std::uint64_t k = split_point(count);
    return merkle_node_hash(subtree_root(entry_hashes, k), subtree_root(entry_hashes + k, count - k));
}

bool is_key_id(std::string_view key_id) {
    if (key_id.empty() || key_id.size() > 64) return false;
    return std::all_of(key_id.begin(), key_id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
               c == '_' || c == '.';
    });
}

// ---- OpenSSL key helpers ----

using PublicKey = openssl::PrivateKey;   // same EVP_PKEY handle type

PublicKey read_public_key(std::string_view pem) {
    openssl::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return nullptr;
    PublicKey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    if (!key || EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519) {
        ERR_clear_error();
        return nullptr;
    }
    return key;
}

std::string public_pem_of(EVP_PKEY* key) {
    openssl::Bio bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) return {};
    char* data = nullptr;
    long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
}

std::string key_id_of(EVP_PKEY* key) {
    unsigned char* der = nullptr;
    int length = i2d_PUBKEY(key, &der);
    if (length <= 0) return {};
    Hash hash = sha256(std::string_view(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length)));
    OPENSSL_free(der);
    return to_hex(hash).substr(0, 16);
}

// Never prompts for a passphrase: the archive key is not encrypted.
int no_passphrase(char*, int, int, void*) { return 0; }

std::string errno_text() { return std::strerror(errno); }

Status write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t written = ::write(fd, bytes.data(), bytes.size());
        if (written < 0) {
            if (errno == EINTR) continue;
            return Error::permanent("archive.key_io", "writing key: " + errno_text());
        }
        bytes.remove_prefix(static_cast<std::size_t>(written));
    }
    return Status::success();
}

// Creates every missing directory of path, each mode 0700.
Status create_private_directories(const std::filesystem::path& directory) {
    if (directory.empty()) return Status::success();
    std::error_code error;
    if (std::filesystem::exists(directory, error)) return Status::success();
    Status parent = create_private_directories(directory.parent_path());
    if (!parent) return parent;
    if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
        return Error::permanent("archive.key_io", "creating " + directory.string() + ": " + errno_text());
    }
    return Status::success();
}

void sync_directory(const std::filesystem::path& directory) {
    int fd = ::open(directory.empty() ? "." : directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

}  // namespace

// ---- hashes ----

std::string to_hex(const Hash& hash) {
    static constexpr char kHexDigits[] = "0123456789abcdef";
    std::string hex(hash.size() * 2, '0');
    for (std::size_t i = 0; i < hash.size(); ++i) {
        hex[2 * i] = kHexDigits[hash[i] >> 4];
        hex[2 * i + 1] = kHexDigits[hash[i] & 0x0f];
    }
    return hex;
}

Result<Hash> hash_from_hex(std::string_view hex) {
    if (hex.size() != 64) {
        return Error::permanent("archive.bad_hash", "hash must be 64 hex characters, got " +
                                                        std::to_string(hex.size()));
    }
    Hash hash{};
    for (std::size_t i = 0; i < hash.size(); ++i) {
        char high = hex[2 * i];
        char low = hex[2 * i + 1];
        bool lower_case = (high < 'A' || high > 'F') && (low < 'A' || low > 'F');
        int high_value = hex_value(high);
        int low_value = hex_value(low);
        if (!lower_case || high_value < 0 || low_value < 0) {
            return Error::permanent("archive.bad_hash", "hash is not lower-case hex");
        }
        hash[i] = static_cast<std::uint8_t>(high_value * 16 + low_value);
    }
    return hash;
}

Hash sha256(std::string_view bytes) {
    Hash hash{};
    if (EVP_Digest(bytes.data(), bytes.size(), hash.data(), nullptr, sha256_method(), nullptr) != 1) {
        throw std::bad_alloc();   // the only way a one-shot SHA-256 fails
    }
    return hash;
}

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
    if (!context_ || EVP_DigestInit_ex2(context_.get(), sha256_method(), nullptr) != 1) throw std::bad_alloc();
}

Sha256& Sha256::update(std::string_view bytes) {
    EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size());
    return *this;
}

Hash Sha256::finish() {
    Hash hash{};
    EVP_DigestFinal_ex(context_.get(), hash.data(), nullptr);
    EVP_DigestInit_ex2(context_.get(), sha256_method(), nullptr);
    return hash;
}

// ---- entries ----

std::string encode_entry(const Entry& entry) {
    std::string line;
    line.reserve(96 + 64 + entry.type.size() + entry.subject.size() + entry.actor.size() + entry.content.size() +
                 entry.record.size());
    line += kEntryMagic;
    line += ' ';
    line += std::to_string(entry.seq);
    line += ' ';
    line += std::to_string(entry.time_micros);
    append_field(line, entry.type);
    append_field(line, entry.subject);
    append_field(line, entry.actor);
    append_field(line, entry.content);
    append_field(line, entry.record);
    line += ' ';
    line += to_hex(entry.prev);
    return line;
}

Result<Entry> decode_entry(std::string_view line) {
    std::vector<std::string_view> tokens = split(line, ' ');
    if (tokens.size() != 9) {
        return chain_corrupt("entry line has " + std::to_string(tokens.size()) + " fields, expected 9");
    }
    if (tokens[0] != kEntryMagic) return chain_corrupt("entry line does not start with \"pv1\"");
    Entry entry;
    if (!parse_integer(tokens[1], entry.seq)) return chain_corrupt("entry seq is not a decimal number");
    if (!parse_integer(tokens[2], entry.time_micros)) return chain_corrupt("entry time is not a decimal number");
    std::string* fields[] = {&entry.type, &entry.subject, &entry.actor, &entry.content, &entry.record};
    for (std::size_t i = 0; i < 5; ++i) {
        if (tokens[3 + i].empty() || !unescape_field(tokens[3 + i], *fields[i])) {
            return chain_corrupt("entry field " + std::to_string(3 + i + 1) + " is badly escaped");
        }
    }
    Result<Hash> prev = hash_from_hex(tokens[8]);
    if (!prev) return chain_corrupt("entry prev: " + prev.error().message);
    entry.prev = *prev;
    if (encode_entry(entry) != line) return chain_corrupt("entry line is not in canonical form");
    return entry;
}

Hash entry_hash(const Entry& entry) { return sha256(encode_entry(entry)); }

// ---- Merkle tree ----

// One buffer and one EVP_Digest per hash: the tree code's hot path.
Hash merkle_leaf_hash(const Hash& entry_hash) {
    std::array<char, 1 + 32> input;
    input[0] = 0x00;
    std::memcpy(input.data() + 1, entry_hash.data(), 32);
    return sha256(std::string_view(input.data(), input.size()));
}

Hash merkle_node_hash(const Hash& left, const Hash& right) {
    std::array<char, 1 + 32 + 32> input;
    input[0] = 0x01;
    std::memcpy(input.data() + 1, left.data(), 32);
    std::memcpy(input.data() + 33, right.data(), 32);
    return sha256(std::string_view(input.data(), input.size()));
}

void MerkleFrontier::append(const Hash& entry_hash) {
    // Each trailing 1 bit of size_ is a perfect subtree the same height as the
    // new node: merge them right to left, like a binary increment.
    Hash node = merkle_leaf_hash(entry_hash);
    for (std::uint64_t bits = size_; bits & 1; bits >>= 1) {
        node = merkle_node_hash(subtrees_.back(), node);
        subtrees_.pop_back();
    }
    subtrees_.push_back(node);
    ++size_;
}

Hash MerkleFrontier::root() const {
    if (subtrees_.empty()) return sha256("");
    Hash root = subtrees_.back();
    for (auto subtree = subtrees_.rbegin() + 1; subtree != subtrees_.rend(); ++subtree) {
        root = merkle_node_hash(*subtree, root);
    }
    return root;
}

std::string MerkleFrontier::encode() const {
    std::string text(kFrontierMagic);
    text += ' ';
    text += std::to_string(size_);
    for (const Hash& subtree : subtrees_) {
        text += ' ';
        text += to_hex(subtree);
    }
    return text;
}

Result<MerkleFrontier> MerkleFrontier::decode(std::string_view text) {
    if (!text.starts_with(kFrontierMagic) || text.size() <= kFrontierMagic.size() ||
        text[kFrontierMagic.size()] != ' ') {
        return chain_corrupt("frontier does not start with \"pv-frontier v1\"");
    }
    std::vector<std::string_view> tokens = split(text.substr(kFrontierMagic.size() + 1), ' ');
    MerkleFrontier frontier;
    if (!parse_integer(tokens[0], frontier.size_)) return chain_corrupt("frontier size is not a decimal number");
    auto expected = static_cast<std::size_t>(std::popcount(frontier.size_));
    if (tokens.size() - 1 != expected) {
        return chain_corrupt("frontier of size " + std::to_string(frontier.size_) + " has " +
                             std::to_string(tokens.size() - 1) + " subtree roots, expected " +
                             std::to_string(expected));
    }
    for (std::size_t i = 1; i < tokens.size(); ++i) {
        Result<Hash> subtree = hash_from_hex(tokens[i]);
        if (!subtree) return chain_corrupt("frontier subtree root: " + subtree.error().message);
        frontier.subtrees_.push_back(*subtree);
    }
    if (frontier.encode() != text) return chain_corrupt("frontier is not in canonical form");
    return frontier;
}

Hash merkle_root(const std::vector<Hash>& entry_hashes, std::uint64_t tree_size) {
    tree_size = std::min<std::uint64_t>(tree_size, entry_hashes.size());
    if (tree_size == 0) return sha256("");
    return subtree_root(entry_hashes.data(), tree_size);
}

std::vector<Hash> inclusion_path(const std::vector<Hash>& entry_hashes, std::uint64_t index,
                                 std::uint64_t tree_size) {
    std::vector<Hash> path;
    if (index >= tree_size || tree_size > entry_hashes.size()) return path;
    // Walk from the root down to the leaf, taking the sibling subtree at each
    // split; the RFC lists them leaf-first, so reverse at the end. Every leaf
    // is hashed into at most one sibling: O(n) in all.
    const Hash* range = entry_hashes.data();
    std::uint64_t count = tree_size;
    std::uint64_t position = index;
    while (count > 1) {
        std::uint64_t k = split_point(count);
        if (position < k) {
            path.push_back(subtree_root(range + k, count - k));
            count = k;
        } else {
            path.push_back(subtree_root(range, k));
            range += k;
            position -= k;
            count -= k;
        }
    }
    std::reverse(path.begin(), path.end());
    return path;
}

bool verify_inclusion(const Hash& entry_hash, std::uint64_t index, std::uint64_t tree_size,
                      const std::vector<Hash>& path, const Hash& root) {
    if (index >= tree_size) return false;
    std::uint64_t fn = index;
    std::uint64_t sn = tree_size - 1;
    Hash r = merkle_leaf_hash(entry_hash);
    for (const Hash& p : path) {
        if (sn == 0) return false;
        if ((fn & 1) || fn == sn) {
            r = merkle_node_hash(p, r);
            if (!(fn & 1)) {
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = merkle_node_hash(r, p);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && r == root;
}

// ---- checkpoints ----

std::string checkpoint_text(const Checkpoint& checkpoint) {
    std::string text(kCheckpointMagic);
    text += "size " + std::to_string(checkpoint.tree_size) + "\n";
    text += "root " + to_hex(checkpoint.root) + "\n";
    text += "head " + to_hex(checkpoint.head) + "\n";
    text += "time " + std::to_string(checkpoint.time_micros) + "\n";
    text += "key " + checkpoint.key_id + "\n";
    return text;
}

Result<Checkpoint> decode_checkpoint_text(std::string_view text) {
    if (!text.starts_with(kCheckpointMagic)) {
        return checkpoint_corrupt("checkpoint does not start with \"postvault-checkpoint v1\"");
    }
    if (!text.ends_with('\n')) return checkpoint_corrupt("checkpoint does not end with a newline");
    std::vector<std::string_view> lines = split(text.substr(kCheckpointMagic.size(), text.size() -
                                                                                       kCheckpointMagic.size() - 1),
                                                '\n');
    static constexpr std::string_view kLabels[] = {"size ", "root ", "head ", "time ", "key "};
    if (lines.size() != std::size(kLabels)) {
        return checkpoint_corrupt("checkpoint has " + std::to_string(lines.size()) + " lines after the first, expected 5");
    }
    for (std::size_t i = 0; i < lines.size(); ++i) {
        if (!lines[i].starts_with(kLabels[i])) {
            return checkpoint_corrupt("checkpoint line " + std::to_string(i + 2) + " does not start with \"" +
                                      std::string(kLabels[i]) + "\"");
        }
        lines[i].remove_prefix(kLabels[i].size());
    }
    Checkpoint checkpoint;
    if (!parse_integer(lines[0], checkpoint.tree_size)) return checkpoint_corrupt("checkpoint size is not a number");
    Result<Hash> root = hash_from_hex(lines[1]);
    if (!root) return checkpoint_corrupt("checkpoint root: " + root.error().message);
    checkpoint.root = *root;
    Result<Hash> head = hash_from_hex(lines[2]);
    if (!head) return checkpoint_corrupt("checkpoint head: " + head.error().message);
    checkpoint.head = *head;
    if (!parse_integer(lines[3], checkpoint.time_micros)) return checkpoint_corrupt("checkpoint time is not a number");
    if (!is_key_id(lines[4])) return checkpoint_corrupt("checkpoint key id is malformed");
    checkpoint.key_id = std::string(lines[4]);
    if (checkpoint_text(checkpoint) != text) return checkpoint_corrupt("checkpoint is not in canonical form");
    return checkpoint;
}

std::string encode_checkpoint(const Checkpoint& checkpoint) {
    return checkpoint_text(checkpoint) + "signature " + encode_base64(checkpoint.signature) + "\n";
}

Result<Checkpoint> decode_checkpoint(std::string_view text) {
    std::size_t signature_line = text.rfind("\nsignature ");
    if (signature_line == std::string_view::npos) return checkpoint_corrupt("checkpoint has no signature line");
    std::string_view signed_text = text.substr(0, signature_line + 1);
    std::string_view signature_field = text.substr(signature_line + 1 + std::string_view("signature ").size());
    if (!signature_field.ends_with('\n')) return checkpoint_corrupt("checkpoint does not end with a newline");
    signature_field.remove_suffix(1);
    Result<Checkpoint> checkpoint = decode_checkpoint_text(signed_text);
    if (!checkpoint) return checkpoint;
    std::optional<std::string> signature = decode_base64(signature_field);
    if (!signature) return checkpoint_corrupt("checkpoint signature is not base64");
    if (signature->size() != kEd25519SignatureSize) {
        return checkpoint_corrupt("checkpoint signature is " + std::to_string(signature->size()) +
                                  " bytes, expected 64");
    }
    checkpoint->signature = std::move(*signature);
    if (encode_checkpoint(*checkpoint) != text) return checkpoint_corrupt("checkpoint is not in canonical form");
    return checkpoint;
}

// ---- signing key ----

SigningKey::SigningKey(openssl::PrivateKey key)
    : key_(std::move(key)), public_pem_(public_pem_of(key_.get())), key_id_(key_id_of(key_.get())) {}

Result<SigningKey> SigningKey::load(const std::string& pem_path) {
    int fd = ::open(pem_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return Error::permanent("archive.key_missing", "no signing key at " + pem_path);
        return Error::permanent("archive.key_io", "opening " + pem_path + ": " + errno_text());
    }
    struct stat status {};
    if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
        ::close(fd);
        return Error::permanent("archive.key_invalid", pem_path + " is not a regular file");
    }
    if ((status.st_mode & 077) != 0) {
        ::close(fd);
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
        return Error::permanent("archive.key_mode", "signing key " + pem_path + " has mode " + mode +
                                                        "; group and others must have no access (chmod 600)");
    }
    std::string pem;
    char buffer[4096];
    while (pem.size() <= kMaxKeyFileSize) {
        ssize_t got = ::read(fd, buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            std::string reason = errno_text();
            ::close(fd);
            OPENSSL_cleanse(buffer, sizeof buffer);
            OPENSSL_cleanse(pem.data(), pem.size());
            return Error::permanent("archive.key_io", "reading " + pem_path + ": " + reason);
        }
        if (got == 0) break;
        pem.append(buffer, static_cast<std::size_t>(got));
    }
    ::close(fd);
    OPENSSL_cleanse(buffer, sizeof buffer);
    openssl::PrivateKey key;
    if (pem.size() <= kMaxKeyFileSize) {
        openssl::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
        if (bio) key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
    }
    OPENSSL_cleanse(pem.data(), pem.size());
    if (!key) {
        std::string reason = openssl::error_text();
        return Error::permanent("archive.key_invalid", pem_path + " is not a PEM private key: " + reason);
    }
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519) {
        return Error::permanent("archive.key_invalid", pem_path + " is not an Ed25519 key");
    }
    SigningKey signing_key(std::move(key));
    if (signing_key.public_pem_.empty() || signing_key.key_id_.empty()) {
        return Error::permanent("archive.key_invalid", "cannot derive the public key of " + pem_path + ": " +
                                                           openssl::error_text());
    }
    return signing_key;
}

Result<SigningKey> SigningKey::create_or_load(const std::string& pem_path) {
    Result<SigningKey> existing = load(pem_path);
    if (existing || existing.error().code != "archive.key_missing") return existing;

    std::filesystem::path path(pem_path);
    Status directories = create_private_directories(path.parent_path());
    if (!directories) return directories.error();

    openssl::PrivateKey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
    if (!key) return Error::permanent("archive.key_io", "generating Ed25519 key: " + openssl::error_text());
    openssl::Bio bio(BIO_new(BIO_s_secmem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
        return Error::permanent("archive.key_io", "encoding Ed25519 key: " + openssl::error_text());
    }
    char* pem_data = nullptr;
    long pem_length = BIO_get_mem_data(bio.get(), &pem_data);

    // Write a private temporary file, then link() it into place: link never
    // replaces an existing file, so a concurrent creator's key is kept.
    std::string temporary = pem_path + ".tmp-XXXXXX";
    int fd = ::mkstemp(temporary.data());
    if (fd < 0) return Error::permanent("archive.key_io", "creating " + temporary + ": " + errno_text());
    Status written = Status::success();
    if (::fchmod(fd, 0600) != 0) {
        written = Error::permanent("archive.key_io", "chmod " + temporary + ": " + errno_text());
    }
    if (written) written = write_all(fd, std::string_view(pem_data, static_cast<std::size_t>(pem_length)));
    if (written && ::fsync(fd) != 0) written = Error::permanent("archive.key_io", "fsync key: " + errno_text());
    ::close(fd);
    if (written && ::link(temporary.c_str(), pem_path.c_str()) != 0 && errno != EEXIST) {
        written = Error::permanent("archive.key_io", "linking " + pem_path + ": " + errno_text());
    }
    ::unlink(temporary.c_str());
    if (!written) return written.error();
    sync_directory(path.parent_path());
    return load(pem_path);
}

std::string SigningKey::sign(std::string_view message) const {
    MdContext context(EVP_MD_CTX_new());
    std::string signature(kEd25519SignatureSize, '\0');
    std::size_t length = signature.size();
    if (!context || EVP_DigestSignInit(context.get(), nullptr, nullptr, nullptr, key_.get()) != 1 ||
        EVP_DigestSign(context.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
        ERR_clear_error();
        return {};
    }
    signature.resize(length);
    return signature;
}

bool verify_signature(std::string_view public_pem, std::string_view message, std::string_view signature) {
    PublicKey key = read_public_key(public_pem);
    if (!key || signature.size() != kEd25519SignatureSize) return false;
    MdContext context(EVP_MD_CTX_new());
    bool valid = context && EVP_DigestVerifyInit(context.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
                 EVP_DigestVerify(context.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                                  signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                                  message.size()) == 1;
    ERR_clear_error();
    return valid;
}

std::string public_key_id(std::string_view public_pem) {
    PublicKey key = read_public_key(public_pem);
    return key ? key_id_of(key.get()) : std::string();
}

Checkpoint sign_checkpoint(const SigningKey& key, Checkpoint checkpoint) {
    checkpoint.key_id = key.key_id();
    checkpoint.signature = key.sign(checkpoint_text(checkpoint));
    return checkpoint;
}

Status verify_checkpoint(const Checkpoint& checkpoint, std::string_view public_pem) {
    std::string key_id = public_key_id(public_pem);
    if (key_id.empty()) return proof_invalid("the public key is not an Ed25519 public key in PEM");
    if (checkpoint.key_id != key_id) {
        return proof_invalid("checkpoint names key " + checkpoint.key_id + " but the public key is " + key_id);
    }
    if (!verify_signature(public_pem, checkpoint_text(checkpoint), checkpoint.signature)) {
        return proof_invalid("checkpoint signature does not verify with key " + key_id);
    }
    return Status::success();
}

// ---- proofs ----

std::string proof_json(const Entry& entry, std::uint64_t index, const std::vector<Hash>& path,
                       const Checkpoint& checkpoint, std::string_view public_pem,
                       std::string_view extra_json_object) {
    using Json = nlohmann::ordered_json;
    Json proof;
    proof["version"] = 1;
    proof["entry"] = encode_entry(entry);
    proof["entry_hash"] = to_hex(entry_hash(entry));
    proof["leaf_index"] = index;
    proof["tree_size"] = checkpoint.tree_size;
    Json path_json = Json::array();
    for (const Hash& hash : path) path_json.push_back(to_hex(hash));
    proof["path"] = std::move(path_json);
    proof["checkpoint"] = {
        {"text", checkpoint_text(checkpoint)},
        {"signature_base64", encode_base64(checkpoint.signature)},
        {"key_id", checkpoint.key_id},
    };
    proof["public_key_pem"] = std::string(public_pem);
    if (!extra_json_object.empty()) {
        Json extra = Json::parse(extra_json_object, nullptr, /*allow_exceptions=*/false);
        if (extra.is_object()) {
            proof["message"] = std::move(extra);
        } else {
            proof["message"] = std::string(extra_json_object);
        }
    }
    // error_handler::replace: actor/subject bytes only reach JSON escaped, but
    // an extra object from a caller may hold invalid UTF-8.
    return proof.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

namespace {

Status verify_proof(const nlohmann::json& proof, std::string_view trusted_public_pem) {
    auto string_field = [&](const nlohmann::json& object, const char* name) -> const std::string* {
        auto it = object.find(name);
        return it != object.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
    };
    auto unsigned_field = [&](const char* name, std::uint64_t& value) {
        auto it = proof.find(name);
        if (it == proof.end() || !it->is_number_unsigned()) return false;
        value = it->get<std::uint64_t>();
        return true;
    };

    if (!proof.is_object()) return proof_invalid("proof is not a JSON object");
    auto version = proof.find("version");
    if (version == proof.end() || !version->is_number_unsigned() || version->get<std::uint64_t>() != 1) {
        return proof_invalid("proof version is not 1");
    }

    const std::string* line = string_field(proof, "entry");
    if (!line) return proof_invalid("proof has no entry line");
    Result<Entry> entry = decode_entry(*line);
    if (!entry) return proof_invalid("entry line: " + entry.error().message);
    Hash hash = sha256(*line);
    const std::string* claimed_hash = string_field(proof, "entry_hash");
    if (!claimed_hash) return proof_invalid("proof has no entry_hash");
    if (*claimed_hash != to_hex(hash)) {
        return proof_invalid("entry_hash " + *claimed_hash + " is not the SHA-256 of the entry line (" +
                             to_hex(hash) + ")");
    }

    std::uint64_t index = 0;
    std::uint64_t tree_size = 0;
    if (!unsigned_field("leaf_index", index)) return proof_invalid("proof has no leaf_index");
    if (!unsigned_field("tree_size", tree_size)) return proof_invalid("proof has no tree_size");
    if (index != entry->seq) {
        return proof_invalid("leaf_index " + std::to_string(index) + " differs from the entry's seq " +
                             std::to_string(entry->seq));
    }
    if (index >= tree_size) {
        return proof_invalid("leaf_index " + std::to_string(index) + " is outside the tree of size " +
                             std::to_string(tree_size));
    }

    auto path_json = proof.find("path");
    if (path_json == proof.end() || !path_json->is_array()) return proof_invalid("proof has no path array");
    if (path_json->size() > kMaxPathLength) return proof_invalid("path is longer than any tree allows");
    std::vector<Hash> path;
    for (const auto& element : *path_json) {
        if (!element.is_string()) return proof_invalid("path element " + std::to_string(path.size()) + " is not a string");
        Result<Hash> node = hash_from_hex(element.get_ref<const std::string&>());
        if (!node) return proof_invalid("path element " + std::to_string(path.size()) + ": " + node.error().message);
        path.push_back(*node);
    }

    auto checkpoint_json = proof.find("checkpoint");
    if (checkpoint_json == proof.end() || !checkpoint_json->is_object()) {
        return proof_invalid("proof has no checkpoint object");
    }
    const std::string* text = string_field(*checkpoint_json, "text");
    const std::string* signature_base64 = string_field(*checkpoint_json, "signature_base64");
    const std::string* key_id = string_field(*checkpoint_json, "key_id");
    if (!text || !signature_base64 || !key_id) {
        return proof_invalid("checkpoint needs text, signature_base64 and key_id strings");
    }
    Result<Checkpoint> checkpoint = decode_checkpoint_text(*text);
    if (!checkpoint) return proof_invalid("checkpoint text: " + checkpoint.error().message);
    std::optional<std::string> signature = decode_base64(*signature_base64);
    if (!signature) return proof_invalid("checkpoint signature_base64 is not base64");
    checkpoint->signature = std::move(*signature);
    if (*key_id != checkpoint->key_id) {
        return proof_invalid("checkpoint key_id " + *key_id + " differs from the key in its text " +
                             checkpoint->key_id);
    }
    if (checkpoint->tree_size != tree_size) {
        return proof_invalid("tree_size " + std::to_string(tree_size) + " differs from the checkpoint's size " +
                             std::to_string(checkpoint->tree_size));
    }

    if (!verify_inclusion(hash, index, tree_size, path, checkpoint->root)) {
        return proof_invalid("the path from entry " + std::to_string(index) +
                             " does not lead to the checkpoint root " + to_hex(checkpoint->root));
    }
    if (index + 1 == tree_size && checkpoint->head != hash) {
        return proof_invalid("the entry is the last of the tree but the checkpoint head is " +
                             to_hex(checkpoint->head));
    }

    const std::string* embedded_pem = string_field(proof, "public_key_pem");
    if (!embedded_pem) return proof_invalid("proof has no public_key_pem");
    std::string embedded_id = public_key_id(*embedded_pem);
    if (embedded_id.empty()) return proof_invalid("public_key_pem is not an Ed25519 public key");
    std::string_view public_pem = trusted_public_pem.empty() ? std::string_view(*embedded_pem) : trusted_public_pem;
    if (!trusted_public_pem.empty()) {
        std::string trusted_id = public_key_id(trusted_public_pem);
        if (trusted_id.empty()) return proof_invalid("the trusted key is not an Ed25519 public key in PEM");
        if (trusted_id != embedded_id) {
            return proof_invalid("the proof carries key " + embedded_id + " but the trusted key is " + trusted_id);
        }
    }
    Status signed_by = verify_checkpoint(*checkpoint, public_pem);
    if (!signed_by) return signed_by;

    auto message = proof.find("message");
    if (message != proof.end()) {
        if (!message->is_object()) return proof_invalid("message is not an object");
        auto sha256_field = message->find("sha256");
        if (sha256_field != message->end() &&
            (!sha256_field->is_string() || sha256_field->get_ref<const std::string&>() != entry->content)) {
            return proof_invalid("message.sha256 differs from the entry's content hash " + entry->content);
        }
    }
    return Status::success();
}

}  // namespace

Status verify_proof_json(std::string_view json, std::string_view trusted_public_pem) {
    nlohmann::json proof = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
    if (proof.is_discarded()) return proof_invalid("proof is not valid JSON");
    try {
        return verify_proof(proof, trusted_public_pem);
    } catch (const nlohmann::json::exception& error) {
        return proof_invalid(std::string("proof JSON: ") + error.what());
    }
}

}  // namespace postvault::archive
