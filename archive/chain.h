// archive/chain.h — tamper evidence for the archive: hash chain, Merkle tree,
// signed checkpoints and third-party inclusion proofs.
//
// Every archive event (ingest, hold, disposal, export...) becomes an Entry.
// Entries form a hash chain (each names the hash of the one before it) and the
// leaves of an RFC 6962/9162 Merkle tree (leaf = SHA-256(0x00 || entry_hash),
// node = SHA-256(0x01 || left || right)). A Checkpoint signs (tree size, root,
// head) with the archive's Ed25519 key. An inclusion proof (proof_json) lets a
// third party check, with sha256sum, python3 and the openssl CLI only, that an
// entry — and so the message SHA-256 in its content field — was in the chain
// when the checkpoint was signed. docs/archive-proofs.md describes the formats
// and tools/verify-proof.py is the independent verifier.
//
// Entry line (what entry_hash() hashes, no trailing newline):
//   pv1 <seq> <time_micros> <type> <subject> <actor> <content> <record> <prev-hex>
// Text fields are percent-escaped (bytes <= 0x20, '%', 0x7f, >= 0x80 as %XX,
// upper-case hex); an empty field is "-" and a field that is exactly "-" is
// "%2D". Decoding is strict: a line that does not re-encode to the same bytes
// is "archive.chain_corrupt".
//
// Everything here is a pure function or a small value type, except
// SigningKey::create_or_load/load (file system) and Sha256 (stateful hasher).
// Thread safety: free functions are safe from any thread; a MerkleFrontier or
// Sha256 belongs to one thread at a time; a SigningKey may sign from several
// threads at once.
// Errors (all permanent): "archive.chain_corrupt" (entry line, frontier),
// "archive.bad_hash", "archive.checkpoint_corrupt", "archive.key_mode",
// "archive.key_missing", "archive.key_invalid", "archive.key_io",
// "archive.proof_invalid". No function throws, except std::bad_alloc.
// Limits: inclusion_path and merkle_root hold every entry hash in memory
// (32 bytes each, ~1 s per million entries on one core); recursion depth is
// log2(tree_size).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/openssl.h"
#include "common/result.h"

namespace postvault::archive {

using Hash = std::array<std::uint8_t, 32>;

// Lower-case hex, 64 characters.
std::string to_hex(const Hash& hash);
// Exactly 64 lower-case hex characters, else "archive.bad_hash".
Result<Hash> hash_from_hex(std::string_view hex);

Hash sha256(std::string_view bytes);

// Incremental SHA-256 for inputs too big to hold at once. finish() returns the
// digest and resets the hasher for a new input.
class Sha256 {
public:
    Sha256();
    Sha256& update(std::string_view bytes);
    Hash finish();

private:
    std::unique_ptr<EVP_MD_CTX, openssl::Deleter<EVP_MD_CTX_free>> context_;
};

// One event of the archive. See the header comment for the line format.
struct Entry {
    std::uint64_t seq = 0;          // 0, 1, 2... equals the Merkle leaf index
    std::int64_t time_micros = 0;   // Unix time in microseconds
    std::string type;               // "ingest", "hold", "disposal"... lower-case word
    std::string subject;            // message id or hold id; may be empty
    std::string actor;              // "smtp", "import", "cli:root", token name; any bytes
    std::string content;            // hex SHA-256 of the message bytes (ingest), else empty
    std::string record;             // hex SHA-256 of the metadata record written, may be empty
    Hash prev{};                    // entry_hash of entry seq-1; all zero for seq 0

    bool operator==(const Entry&) const = default;
};

std::string encode_entry(const Entry& entry);
Result<Entry> decode_entry(std::string_view line);
// SHA-256 of encode_entry(entry).
Hash entry_hash(const Entry& entry);

// RFC 6962 hashing of one leaf (from an entry hash) and of one interior node.
Hash merkle_leaf_hash(const Hash& entry_hash);
Hash merkle_node_hash(const Hash& left, const Hash& right);

// The right edge of the Merkle tree: the roots of its perfect subtrees, one per
// set bit of size(), largest first. append() is O(log n); root() is the
// RFC 6962 MTH of all appended leaves (SHA-256("") when empty).
// Stored form (encode): "pv-frontier v1 <size>" then " <hex>" per subtree.
class MerkleFrontier {
public:
    void append(const Hash& entry_hash);
    std::uint64_t size() const { return size_; }
    Hash root() const;
    std::string encode() const;
    static Result<MerkleFrontier> decode(std::string_view text);

private:
    std::uint64_t size_ = 0;
    std::vector<Hash> subtrees_;
};

// Reference MTH (RFC 6962 §2.1) over the leaves of entry_hashes[0, tree_size),
// straight from the recursive definition; O(n). A tree_size larger than
// entry_hashes.size() is clamped to it.
Hash merkle_root(const std::vector<Hash>& entry_hashes, std::uint64_t tree_size);

// RFC 9162 §2.1.3.1 PATH(index, D[tree_size]), deepest sibling first; O(n).
// Empty when index >= tree_size or tree_size > entry_hashes.size() (and, as
// the RFC says, for a tree of one leaf).
std::vector<Hash> inclusion_path(const std::vector<Hash>& entry_hashes, std::uint64_t index,
                                 std::uint64_t tree_size);

// RFC 9162 §2.1.3.2: true when path proves entry_hash is leaf index of the
// tree of tree_size leaves whose root is root.
bool verify_inclusion(const Hash& entry_hash, std::uint64_t index, std::uint64_t tree_size,
                      const std::vector<Hash>& path, const Hash& root);

// A signed statement of the tree at one moment.
struct Checkpoint {
    std::uint64_t tree_size = 0;
    Hash root{};                    // MTH of the first tree_size entries
    Hash head{};                    // entry_hash of entry tree_size-1 (zero when empty)
    std::int64_t time_micros = 0;
    std::string key_id;             // SigningKey::key_id() of the signer
    std::string signature;          // raw 64-byte Ed25519 signature of checkpoint_text()

    bool operator==(const Checkpoint&) const = default;
};

// The exact bytes signed:
//   "postvault-checkpoint v1\nsize <n>\nroot <hex>\nhead <hex>\ntime <micros>\nkey <key_id>\n"
std::string checkpoint_text(const Checkpoint& checkpoint);
// checkpoint_text() without the signature, strictly ("archive.checkpoint_corrupt").
Result<Checkpoint> decode_checkpoint_text(std::string_view text);
// Stored form: checkpoint_text() followed by "signature <base64>\n".
std::string encode_checkpoint(const Checkpoint& checkpoint);
Result<Checkpoint> decode_checkpoint(std::string_view text);

// The archive's Ed25519 key, a PKCS#8 PEM file that only its owner may read.
class SigningKey {
public:
    // Loads the key, or creates it (file 0600; a missing parent directory is
    // created 0700) when the file does not exist. Creation is atomic: a
    // concurrent creator's key wins and is loaded.
    static Result<SigningKey> create_or_load(const std::string& pem_path);
    // Loads an existing key; never creates. A file with any group or other
    // permission bit is refused ("archive.key_mode").
    static Result<SigningKey> load(const std::string& pem_path);

    // Raw 64-byte signature; empty only if OpenSSL fails (out of memory).
    std::string sign(std::string_view message) const;
    std::string public_pem() const { return public_pem_; }   // SubjectPublicKeyInfo PEM
    std::string key_id() const { return key_id_; }           // 16 hex of SHA-256(public DER)

private:
    explicit SigningKey(openssl::PrivateKey key);

    openssl::PrivateKey key_;
    std::string public_pem_;
    std::string key_id_;
};

bool verify_signature(std::string_view public_pem, std::string_view message, std::string_view signature);
// key_id of an Ed25519 public key in PEM; empty if it cannot be parsed.
std::string public_key_id(std::string_view public_pem);

// Fills key_id and signature of checkpoint with key.
Checkpoint sign_checkpoint(const SigningKey& key, Checkpoint checkpoint);
// The signature verifies with public_pem and key_id matches that key.
Status verify_checkpoint(const Checkpoint& checkpoint, std::string_view public_pem);

// A self-contained inclusion proof as pretty JSON: version, entry (the line),
// entry_hash, leaf_index, tree_size, path, checkpoint {text, signature_base64,
// key_id}, public_key_pem, and under "message" the fields of
// extra_json_object (e.g. {"message_id": "...", "sha256": "..."}). An empty
// extra_json_object omits "message"; one that is not a JSON object is kept as
// a string under "message".
std::string proof_json(const Entry& entry, std::uint64_t index, const std::vector<Hash>& path,
                       const Checkpoint& checkpoint, std::string_view public_pem,
                       std::string_view extra_json_object);

// Everything a third party does: parse the entry line strictly, recompute its
// hash, leaf and path up to the root, compare with the checkpoint's root, parse
// the checkpoint text and verify its signature with trusted_public_pem (when
// empty, with the proof's own public_key_pem, which only shows the proof is
// self-consistent). Also leaf_index == seq, tree_size matches the checkpoint,
// head matches for the last leaf, message.sha256 (if present) == content.
// "archive.proof_invalid" naming the first check that failed.
Status verify_proof_json(std::string_view json, std::string_view trusted_public_pem);

}  // namespace postvault::archive
