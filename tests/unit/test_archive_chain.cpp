// tests/unit/test_archive_chain.cpp — archive/chain: entry lines, Merkle tree,
// checkpoints, signing key files and inclusion proofs.
//
// Known answers are computed here with raw OpenSSL SHA256() calls, not with
// chain.cpp's helpers. The last test runs tools/verify-proof.py (python3 and
// the openssl CLI) on a proof in a temporary directory, as a third party would.
#include "tests/unit/temp_dir.h"
#include "archive/chain.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/base64.h"

namespace postvault::archive {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using test_support::TempDir;

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream content;
    content << in.rdbuf();
    return content.str();
}

void write_file(const fs::path& path, std::string_view bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

unsigned file_mode(const fs::path& path) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0) return 0xffff;
    return status.st_mode & 07777;
}

// Independent SHA-256: the low-level one-shot, not chain.cpp's EVP path.
Hash raw_sha256(std::string_view bytes) {
    Hash hash{};
    SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), hash.data());
    return hash;
}

std::string bytes_of(const Hash& hash) { return std::string(hash.begin(), hash.end()); }

Hash fake_entry_hash(std::uint64_t i) { return raw_sha256("entry " + std::to_string(i)); }

std::vector<Hash> fake_entry_hashes(std::uint64_t count) {
    std::vector<Hash> hashes;
    hashes.reserve(count);
    for (std::uint64_t i = 0; i < count; ++i) hashes.push_back(fake_entry_hash(i));
    return hashes;
}

Entry nasty_entry() {
    Entry entry;
    entry.seq = 42;
    entry.time_micros = 1700000000123456;
    entry.type = "ingest";
    entry.subject = "<msg id with spaces@example.org>\r\n";
    entry.actor = std::string("cli:ro%ot\t\x7f\xff\x01", 13) + "Grüße ✉ " + std::string(1, '\0') + "end";
    entry.content = "";
    entry.record = "-";
    entry.prev = raw_sha256("previous");
    return entry;
}

// A chain of n linked entries, each with a distinct, awkward actor.
std::vector<Entry> make_chain(std::uint64_t count) {
    std::vector<Entry> entries;
    Hash prev{};
    for (std::uint64_t i = 0; i < count; ++i) {
        Entry entry;
        entry.seq = i;
        entry.time_micros = 1700000000000000 + static_cast<std::int64_t>(i) * 1000;
        entry.type = i % 3 == 0 ? "hold" : "ingest";
        entry.subject = "msg-" + std::to_string(i);
        entry.actor = i % 2 ? "smtp" : "token \"ops\" 100% ✓";
        entry.content = entry.type == "ingest" ? to_hex(raw_sha256("message " + std::to_string(i))) : "";
        entry.record = to_hex(raw_sha256("record " + std::to_string(i)));
        entry.prev = prev;
        prev = entry_hash(entry);
        entries.push_back(entry);
    }
    return entries;
}

std::pair<int, std::string> run_command(const std::string& command) {
    std::string output;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) return {-1, "popen failed"};
    char buffer[512];
    while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
    int status = ::pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// ---- hashes and entry lines ----

TEST(ArchiveChain, HexAndSha256KnownAnswers) {
    Hash abc = sha256("abc");
    EXPECT_EQ(to_hex(abc), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    Result<Hash> parsed = hash_from_hex(to_hex(abc));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, abc);

    std::string upper = to_hex(abc);
    upper[0] = 'B';
    for (std::string bad : {upper, to_hex(abc).substr(1), to_hex(abc) + "0", std::string(63, '0') + "g",
                            std::string(64, ' '), std::string()}) {
        Result<Hash> rejected = hash_from_hex(bad);
        ASSERT_FALSE(rejected.ok()) << bad;
        EXPECT_EQ(rejected.error().code, "archive.bad_hash");
    }

    Sha256 incremental;
    std::string big(3 * 1024 * 1024 + 17, 'x');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);
    for (std::size_t offset = 0; offset < big.size(); offset += 65537) {
        incremental.update(std::string_view(big).substr(offset, 65537));
    }
    EXPECT_EQ(incremental.finish(), raw_sha256(big));
    // finish() resets: the same object hashes a second input from scratch.
    incremental.update("a").update("bc");
    EXPECT_EQ(incremental.finish(), abc);
}

TEST(ArchiveChain, EntryLineGoldenEncoding) {
    Entry entry;
    entry.seq = 7;
    entry.time_micros = -5;
    entry.type = "key-rotation";
    entry.subject = "";
    entry.actor = "-";
    entry.content = "a b%\n";
    entry.record = std::string("\xc3\xa9\x7f", 3);
    entry.prev = Hash{};
    EXPECT_EQ(encode_entry(entry),
              "pv1 7 -5 key-rotation - %2D a%20b%25%0A %C3%A9%7F " + std::string(64, '0'));
    EXPECT_EQ(entry_hash(entry), raw_sha256(encode_entry(entry)));
}

TEST(ArchiveChain, EntryRoundTripWithNastyBytes) {
    std::vector<std::string> values = {"",   "-",    "--",  "%2D", "%",  " ", "a b", "\n", "\r\n",
                                       "é",  "✉ x", "-x",  "x-",  "%%", std::string(1, '\0'),
                                       std::string("\x80\xff\x20\x21\x7e\x7f", 6)};
    for (int byte = 0; byte < 256; ++byte) values.push_back(std::string(1, static_cast<char>(byte)));
    for (const std::string& value : values) {
        Entry entry = nasty_entry();
        entry.subject = value;
        entry.actor = value + "|" + value;
        entry.type = value;
        std::string line = encode_entry(entry);
        // One line of printable ASCII with exactly eight separating spaces.
        EXPECT_EQ(std::count(line.begin(), line.end(), ' '), 8) << line;
        for (char c : line) {
            ASSERT_TRUE(c >= 0x20 && c < 0x7f) << "raw byte in " << line;
        }
        Result<Entry> decoded = decode_entry(line);
        ASSERT_TRUE(decoded.ok()) << line << ": " << decoded.error().message;
        EXPECT_EQ(*decoded, entry);
    }
    Entry entry = nasty_entry();
    Result<Entry> decoded = decode_entry(encode_entry(entry));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, entry);
    EXPECT_EQ(entry_hash(*decoded), entry_hash(entry));
}

TEST(ArchiveChain, DecodeRejectsNonCanonicalLines) {
    Entry entry;
    entry.seq = 12;
    entry.time_micros = 99;
    entry.type = "ingest";
    entry.subject = "abc";
    entry.actor = "x y";
    entry.content = "";
    entry.record = "r";
    entry.prev = raw_sha256("p");
    const std::string prev = to_hex(entry.prev);
    const std::string good = "pv1 12 99 ingest abc x%20y - r " + prev;
    ASSERT_EQ(encode_entry(entry), good);
    ASSERT_TRUE(decode_entry(good).ok());

    std::string upper_prev = prev;
    for (char& c : upper_prev) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const std::vector<std::string> variants = {
        good + "\n",
        good + " ",
        " " + good,
        "pv2 12 99 ingest abc x%20y - r " + prev,
        "pv1 012 99 ingest abc x%20y - r " + prev,
        "pv1 +12 99 ingest abc x%20y - r " + prev,
        "pv1 -12 99 ingest abc x%20y - r " + prev,
        "pv1 12 099 ingest abc x%20y - r " + prev,
        "pv1 12 -0 ingest abc x%20y - r " + prev,
        "pv1 12 - ingest abc x%20y - r " + prev,
        "pv1 18446744073709551616 99 ingest abc x%20y - r " + prev,
        "pv1 12 99 ingest abc x%20y  - r " + prev,          // empty token
        "pv1 12 99 ingest abc x%20y r " + prev,             // missing field
        "pv1 12 99 ingest abc x%20y - r r " + prev,         // extra field
        "pv1 12 99 ingest abc x%20y %2d r " + prev,         // lower-case escape
        "pv1 12 99 ingest abc x%20y %2D%2D r " + prev,      // "--" needs no escape
        "pv1 12 99 ingest abc x%20y%41 - r " + prev,        // 'A' needs no escape
        "pv1 12 99 ingest %61bc x%20y - r " + prev,
        "pv1 12 99 ingest abc x%2 - r " + prev,             // truncated escape
        "pv1 12 99 ingest abc x% - r " + prev,
        "pv1 12 99 ingest abc x%G0y - r " + prev,
        "pv1 12 99 ingest abc x%20y - a%2Db " + prev,       // '-' inside needs no escape
        "pv1 12 99 ingest ab\tc x%20y - r " + prev,         // raw control byte
        "pv1 12 99 ingest ab\xc3\xa9 x%20y - r " + prev,    // raw UTF-8
        "pv1 12 99 ingest abc x%20y - r " + upper_prev,
        "pv1 12 99 ingest abc x%20y - r " + prev.substr(1),
        "pv1 12 99 ingest abc x%20y - r " + prev + "00",
        "pv1\t12 99 ingest abc x%20y - r " + prev,
        "",
    };
    for (const std::string& variant : variants) {
        Result<Entry> decoded = decode_entry(variant);
        ASSERT_FALSE(decoded.ok()) << "accepted: " << variant;
        EXPECT_EQ(decoded.error().code, "archive.chain_corrupt") << variant;
        EXPECT_FALSE(decoded.error().message.empty());
    }
}

// ---- Merkle tree ----

TEST(ArchiveChain, MerkleHashingKnownAnswer) {
    // Three entries, by hand with raw SHA256():
    //   root = H(01 || H(01 || L0 || L1) || L2),  Li = H(00 || ei)
    std::vector<Hash> entries = fake_entry_hashes(3);
    Hash leaves[3];
    for (int i = 0; i < 3; ++i) leaves[i] = raw_sha256(std::string(1, '\0') + bytes_of(entries[i]));
    Hash left = raw_sha256("\x01" + bytes_of(leaves[0]) + bytes_of(leaves[1]));
    Hash expected_root = raw_sha256("\x01" + bytes_of(left) + bytes_of(leaves[2]));

    EXPECT_EQ(merkle_leaf_hash(entries[0]), leaves[0]);
    EXPECT_EQ(merkle_node_hash(leaves[0], leaves[1]), left);
    EXPECT_EQ(merkle_root(entries, 3), expected_root);
    EXPECT_EQ(merkle_root(entries, 1), leaves[0]);
    EXPECT_EQ(merkle_root(entries, 2), left);
    EXPECT_EQ(merkle_root(entries, 0), raw_sha256(""));

    MerkleFrontier frontier;
    EXPECT_EQ(frontier.root(), raw_sha256(""));
    for (const Hash& entry : entries) frontier.append(entry);
    EXPECT_EQ(frontier.size(), 3u);
    EXPECT_EQ(frontier.root(), expected_root);

    // PATH(2, D[3]) = [MTH(D[0:2])]; PATH(0, D[3]) = [L1, L2].
    EXPECT_EQ(inclusion_path(entries, 2, 3), std::vector<Hash>{left});
    EXPECT_EQ(inclusion_path(entries, 0, 3), (std::vector<Hash>{leaves[1], leaves[2]}));
}

TEST(ArchiveChain, FrontierMatchesReferenceRoot) {
    std::vector<Hash> entries = fake_entry_hashes(301);
    MerkleFrontier frontier;
    for (std::uint64_t n = 0; n <= 300; ++n) {
        ASSERT_EQ(frontier.size(), n);
        ASSERT_EQ(frontier.root(), merkle_root(entries, n)) << "n=" << n;
        // The stored form round-trips and the decoded copy keeps growing alike.
        Result<MerkleFrontier> copy = MerkleFrontier::decode(frontier.encode());
        ASSERT_TRUE(copy.ok()) << copy.error().message;
        ASSERT_EQ(copy->encode(), frontier.encode());
        copy->append(entries[n]);
        frontier.append(entries[n]);
        ASSERT_EQ(copy->root(), frontier.root());
    }
}

TEST(ArchiveChain, FrontierMatchesReferenceRootLargeTrees) {
    const std::uint64_t largest = (1u << 18) + 3;
    std::vector<Hash> entries = fake_entry_hashes(largest);
    const std::vector<std::uint64_t> checkpoints = {1023, 1024, 1025, 65535, 100001, 1u << 18, largest};
    MerkleFrontier frontier;
    std::size_t next = 0;
    for (std::uint64_t i = 0; i < largest; ++i) {
        frontier.append(entries[i]);
        if (frontier.size() == checkpoints[next]) {
            ASSERT_EQ(frontier.root(), merkle_root(entries, frontier.size())) << "n=" << frontier.size();
            ++next;
        }
    }
    EXPECT_EQ(next, checkpoints.size());
}

TEST(ArchiveChain, FrontierDecodeIsStrict) {
    MerkleFrontier frontier;
    for (const Hash& entry : fake_entry_hashes(5)) frontier.append(entry);
    const std::string good = frontier.encode();
    ASSERT_TRUE(MerkleFrontier::decode(good).ok());
    std::vector<std::string> parts;
    std::string hashes = good.substr(std::string("pv-frontier v1 5").size());
    const std::vector<std::string> variants = {
        good + " ",
        good + "\n",
        "pv-frontier v1 05" + hashes,
        "pv-frontier v1 4" + hashes,
        "pv-frontier v1 7" + hashes,   // popcount(7) = 3 roots, not 2
        "pv-frontier v2 5" + hashes,
        "pv-frontier v1 5" + hashes.substr(0, hashes.size() - 65),
        "pv-frontier v1 5" + hashes + " " + std::string(64, '0'),
        "pv-frontier v1 5 " + hashes,
        "pv-frontier v1",
        "pv-frontier v1 ",
        "",
    };
    for (const std::string& variant : variants) {
        Result<MerkleFrontier> decoded = MerkleFrontier::decode(variant);
        ASSERT_FALSE(decoded.ok()) << "accepted: " << variant;
        EXPECT_EQ(decoded.error().code, "archive.chain_corrupt");
    }
    Result<MerkleFrontier> empty = MerkleFrontier::decode("pv-frontier v1 0");
    ASSERT_TRUE(empty.ok());
    EXPECT_EQ(empty->root(), raw_sha256(""));
}

TEST(ArchiveChain, InclusionPathsVerifyForEveryIndexAndSize) {
    std::vector<Hash> entries = fake_entry_hashes(71);
    const Hash stranger = raw_sha256("not in the tree");
    for (std::uint64_t size = 1; size <= 70; ++size) {
        const Hash root = merkle_root(entries, size);
        for (std::uint64_t index = 0; index < size; ++index) {
            std::vector<Hash> path = inclusion_path(entries, index, size);
            ASSERT_TRUE(verify_inclusion(entries[index], index, size, path, root))
                << "index " << index << " size " << size;
            // Wrong index, leaf, root, size; truncated and extended paths.
            for (std::uint64_t other = 0; other < size; ++other) {
                if (other == index) continue;
                ASSERT_FALSE(verify_inclusion(entries[index], other, size, path, root))
                    << "index " << index << " accepted as " << other << " size " << size;
            }
            ASSERT_FALSE(verify_inclusion(entries[index], size, size, path, root));
            ASSERT_FALSE(verify_inclusion(stranger, index, size, path, root));
            ASSERT_FALSE(verify_inclusion(entries[(index + 1) % 71], index, size, path, root));
            ASSERT_FALSE(verify_inclusion(entries[index], index, size, path, stranger));
            ASSERT_FALSE(verify_inclusion(entries[index], index, size + 1, path, merkle_root(entries, size + 1)));
            if (!path.empty()) {
                std::vector<Hash> truncated(path.begin(), path.end() - 1);
                ASSERT_FALSE(verify_inclusion(entries[index], index, size, truncated, root));
                std::vector<Hash> altered = path;
                altered.front()[0] ^= 1;
                ASSERT_FALSE(verify_inclusion(entries[index], index, size, altered, root));
            }
            std::vector<Hash> extended = path;
            extended.push_back(stranger);
            ASSERT_FALSE(verify_inclusion(entries[index], index, size, extended, root));
        }
    }
    EXPECT_TRUE(inclusion_path(entries, 5, 5).empty());
    EXPECT_TRUE(inclusion_path(entries, 0, 72).empty());
    EXPECT_FALSE(verify_inclusion(entries[0], 0, 0, {}, raw_sha256("")));
}

TEST(ArchiveChain, InclusionPathInLargeTree) {
    const std::uint64_t size = 1'000'003;
    std::vector<Hash> entries = fake_entry_hashes(size);
    MerkleFrontier frontier;
    for (const Hash& entry : entries) frontier.append(entry);
    const Hash root = frontier.root();
    for (std::uint64_t index : {std::uint64_t{0}, std::uint64_t{524289}, size - 1}) {
        std::vector<Hash> path = inclusion_path(entries, index, size);
        EXPECT_LE(path.size(), 21u);
        EXPECT_TRUE(verify_inclusion(entries[index], index, size, path, root)) << index;
        EXPECT_FALSE(verify_inclusion(entries[index], index ^ 1, size, path, root)) << index;
    }
}

// ---- keys and signatures ----

TEST(ArchiveChain, KeyIsCreatedPrivatelyAndLoadedAgain) {
    TempDir dir;
    const fs::path key_path = dir.path() / "state" / "keys" / "checkpoint.pem";

    Result<SigningKey> missing = SigningKey::load(key_path.string());
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, "archive.key_missing");
    EXPECT_FALSE(fs::exists(key_path));

    Result<SigningKey> created = SigningKey::create_or_load(key_path.string());
    ASSERT_TRUE(created.ok()) << created.error().message;
    EXPECT_EQ(file_mode(key_path), 0600u);
    EXPECT_EQ(file_mode(key_path.parent_path()), 0700u);
    EXPECT_EQ(file_mode(key_path.parent_path().parent_path()), 0700u);
    EXPECT_EQ(std::distance(fs::directory_iterator(key_path.parent_path()), fs::directory_iterator()), 1)
        << "temporary file left behind";
    const std::string pem = read_file(key_path);
    EXPECT_TRUE(pem.starts_with("-----BEGIN PRIVATE KEY-----\n")) << "not PKCS#8";

    // The public PEM is SubjectPublicKeyInfo; key_id is SHA-256 of its DER body.
    const std::string public_pem = created->public_pem();
    ASSERT_TRUE(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    std::string body;
    std::istringstream lines(public_pem);
    for (std::string line; std::getline(lines, line);) {
        if (!line.starts_with("-----")) body += line;
    }
    std::optional<std::string> der = decode_base64(body);
    ASSERT_TRUE(der.has_value());
    EXPECT_EQ(created->key_id(), to_hex(raw_sha256(*der)).substr(0, 16));
    EXPECT_EQ(public_key_id(public_pem), created->key_id());

    Result<SigningKey> again = SigningKey::create_or_load(key_path.string());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->key_id(), created->key_id());
    EXPECT_EQ(read_file(key_path), pem) << "an existing key was replaced";
    Result<SigningKey> loaded = SigningKey::load(key_path.string());
    ASSERT_TRUE(loaded.ok());
    EXPECT_EQ(loaded->public_pem(), public_pem);

    // Another path gets another key.
    Result<SigningKey> other = SigningKey::create_or_load((dir.path() / "other.pem").string());
    ASSERT_TRUE(other.ok());
    EXPECT_NE(other->key_id(), created->key_id());
}

TEST(ArchiveChain, KeyReadableByOthersIsRefused) {
    TempDir dir;
    const fs::path key_path = dir.path() / "key.pem";
    ASSERT_TRUE(SigningKey::create_or_load(key_path.string()).ok());
    for (unsigned mode : {0644u, 0640u, 0604u, 0660u}) {
        ASSERT_EQ(::chmod(key_path.c_str(), mode), 0);
        Result<SigningKey> loaded = SigningKey::load(key_path.string());
        ASSERT_FALSE(loaded.ok()) << std::oct << mode;
        EXPECT_EQ(loaded.error().code, "archive.key_mode");
        Result<SigningKey> created = SigningKey::create_or_load(key_path.string());
        ASSERT_FALSE(created.ok());
        EXPECT_EQ(created.error().code, "archive.key_mode");
    }
    ASSERT_EQ(::chmod(key_path.c_str(), 0400), 0);
    EXPECT_TRUE(SigningKey::load(key_path.string()).ok());
}

TEST(ArchiveChain, KeyFileThatIsNotEd25519IsRefused) {
    TempDir dir;
    const fs::path garbage = dir.path() / "garbage.pem";
    write_file(garbage, "not a key\n");
    ASSERT_EQ(::chmod(garbage.c_str(), 0600), 0);
    Result<SigningKey> loaded = SigningKey::create_or_load(garbage.string());
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.error().code, "archive.key_invalid");
    EXPECT_EQ(read_file(garbage), "not a key\n");

    const fs::path ec = dir.path() / "ec.pem";
    openssl::PrivateKey ec_key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    ASSERT_TRUE(ec_key);
    openssl::Bio bio(BIO_new(BIO_s_mem()));
    ASSERT_EQ(PEM_write_bio_PrivateKey(bio.get(), ec_key.get(), nullptr, nullptr, 0, nullptr, nullptr), 1);
    char* data = nullptr;
    long length = BIO_get_mem_data(bio.get(), &data);
    write_file(ec, std::string_view(data, static_cast<std::size_t>(length)));
    ASSERT_EQ(::chmod(ec.c_str(), 0600), 0);
    Result<SigningKey> ec_loaded = SigningKey::load(ec.string());
    ASSERT_FALSE(ec_loaded.ok());
    EXPECT_EQ(ec_loaded.error().code, "archive.key_invalid");
}

TEST(ArchiveChain, SignAndVerify) {
    TempDir dir;
    Result<SigningKey> key = SigningKey::create_or_load((dir.path() / "a.pem").string());
    Result<SigningKey> other = SigningKey::create_or_load((dir.path() / "b.pem").string());
    ASSERT_TRUE(key.ok() && other.ok());
    const std::string message = "postvault-checkpoint v1\nsize 1\n";
    const std::string signature = key->sign(message);
    ASSERT_EQ(signature.size(), 64u);
    EXPECT_TRUE(verify_signature(key->public_pem(), message, signature));
    EXPECT_EQ(key->sign(message), signature) << "Ed25519 is deterministic";

    std::string flipped = signature;
    flipped[10] ^= 0x01;
    EXPECT_FALSE(verify_signature(key->public_pem(), message, flipped));
    EXPECT_FALSE(verify_signature(key->public_pem(), message + " ", signature));
    EXPECT_FALSE(verify_signature(key->public_pem(), message, signature.substr(0, 63)));
    EXPECT_FALSE(verify_signature(key->public_pem(), message, signature + "x"));
    EXPECT_FALSE(verify_signature(other->public_pem(), message, signature));
    EXPECT_FALSE(verify_signature("not a pem", message, signature));
    EXPECT_FALSE(verify_signature(read_file(dir.path() / "a.pem"), message, signature)) << "private PEM as public";
}

// ---- checkpoints ----

TEST(ArchiveChain, CheckpointTextEncodeAndDecode) {
    TempDir dir;
    Result<SigningKey> key = SigningKey::create_or_load((dir.path() / "key.pem").string());
    ASSERT_TRUE(key.ok());
    Checkpoint unsigned_checkpoint;
    unsigned_checkpoint.tree_size = 3;
    unsigned_checkpoint.root = raw_sha256("root");
    unsigned_checkpoint.head = raw_sha256("head");
    unsigned_checkpoint.time_micros = 1700000000000001;
    Checkpoint checkpoint = sign_checkpoint(*key, unsigned_checkpoint);
    EXPECT_EQ(checkpoint.key_id, key->key_id());
    const std::string text = checkpoint_text(checkpoint);
    EXPECT_EQ(text, "postvault-checkpoint v1\nsize 3\nroot " + to_hex(raw_sha256("root")) + "\nhead " +
                        to_hex(raw_sha256("head")) + "\ntime 1700000000000001\nkey " + key->key_id() + "\n");
    EXPECT_TRUE(verify_signature(key->public_pem(), text, checkpoint.signature));
    EXPECT_TRUE(verify_checkpoint(checkpoint, key->public_pem()).ok());

    const std::string stored = encode_checkpoint(checkpoint);
    EXPECT_EQ(stored, text + "signature " + encode_base64(checkpoint.signature) + "\n");
    Result<Checkpoint> decoded = decode_checkpoint(stored);
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(*decoded, checkpoint);
    Result<Checkpoint> decoded_text = decode_checkpoint_text(text);
    ASSERT_TRUE(decoded_text.ok());
    EXPECT_EQ(decoded_text->root, checkpoint.root);
    EXPECT_TRUE(decoded_text->signature.empty());

    Checkpoint tampered = checkpoint;
    tampered.tree_size = 4;
    EXPECT_FALSE(verify_checkpoint(tampered, key->public_pem()).ok());
    tampered = checkpoint;
    tampered.time_micros += 1;
    EXPECT_FALSE(verify_checkpoint(tampered, key->public_pem()).ok());
    tampered = checkpoint;
    tampered.key_id = "0000000000000000";
    EXPECT_FALSE(verify_checkpoint(tampered, key->public_pem()).ok());

    auto replace = [](std::string text, const std::string& from, const std::string& to) {
        text.replace(text.find(from), from.size(), to);
        return text;
    };
    const std::string root_hex = to_hex(checkpoint.root);
    std::string upper_root = root_hex;
    for (char& c : upper_root) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const std::string signature_b64 = encode_base64(checkpoint.signature);
    const std::vector<std::string> variants = {
        text,                                                   // no signature line
        stored + "\n",
        stored.substr(0, stored.size() - 1),
        replace(stored, "\n", "\r\n"),
        replace(stored, "v1", "v2"),
        replace(stored, "size 3", "size 03"),
        replace(stored, "size 3", "size  3"),
        replace(stored, root_hex, upper_root),
        replace(stored, "time 1700000000000001", "time +1700000000000001"),
        replace(stored, "key ", "key  "),
        replace(stored, "signature " + signature_b64, "signature " + signature_b64.substr(4)),
        replace(stored, "signature " + signature_b64, "signature " + signature_b64 + "AAAA"),
        replace(stored, "signature " + signature_b64, "signature  " + signature_b64),
        replace(stored, "signature ", "signature\t"),
        replace(stored, "head ", "extra line\nhead "),
        replace(replace(stored, "root", "ROOT"), "head", "root"),
    };
    for (const std::string& variant : variants) {
        Result<Checkpoint> rejected = decode_checkpoint(variant);
        ASSERT_FALSE(rejected.ok()) << "accepted: " << variant;
        EXPECT_EQ(rejected.error().code, "archive.checkpoint_corrupt");
    }
    EXPECT_FALSE(decode_checkpoint_text(text + "signature " + signature_b64 + "\n").ok());
}

// ---- proofs ----

struct ProofFixture {
    TempDir dir;
    std::optional<SigningKey> key;
    std::optional<SigningKey> other_key;
    std::vector<Entry> entries;
    std::vector<Hash> hashes;
    Checkpoint checkpoint;

    explicit ProofFixture(std::uint64_t size) {
        Result<SigningKey> created = SigningKey::create_or_load((dir.path() / "key.pem").string());
        Result<SigningKey> other = SigningKey::create_or_load((dir.path() / "other.pem").string());
        if (!created || !other) throw std::runtime_error("key creation failed");
        key.emplace(std::move(*created));
        other_key.emplace(std::move(*other));
        entries = make_chain(size);
        MerkleFrontier frontier;
        for (const Entry& entry : entries) {
            hashes.push_back(entry_hash(entry));
            frontier.append(hashes.back());
        }
        Checkpoint unsigned_checkpoint;
        unsigned_checkpoint.tree_size = size;
        unsigned_checkpoint.root = frontier.root();
        unsigned_checkpoint.head = hashes.back();
        unsigned_checkpoint.time_micros = 1700000123456789;
        checkpoint = sign_checkpoint(*key, unsigned_checkpoint);
    }

    std::string proof(std::uint64_t index) const {
        const Entry& entry = entries[index];
        json message = {{"message_id", "<" + entry.subject + "@example.org>"}, {"sha256", entry.content}};
        if (entry.content.empty()) message = json::object({{"message_id", "<hold>"}});
        return proof_json(entry, index, inclusion_path(hashes, index, entries.size()), checkpoint,
                          key->public_pem(), message.dump());
    }
};

// Each mutation of a valid proof that verify_proof_json (and the Python tool) must refuse.
std::vector<std::pair<std::string, std::function<void(json&)>>> proof_tamperings(const ProofFixture& fixture) {
    auto set_text_line = [](json& proof, const std::string& label, const std::string& value) {
        std::string text = proof["checkpoint"]["text"];
        std::size_t start = text.find("\n" + label + " ") + 1;
        std::size_t end = text.find('\n', start);
        text.replace(start, end - start, label + " " + value);
        proof["checkpoint"]["text"] = text;
    };
    const std::string other_pem = fixture.other_key->public_pem();
    return {
        {"version", [](json& p) { p["version"] = 2; }},
        {"entry time", [](json& p) {
             std::string line = p["entry"];
             std::size_t at = line.find(" 17000000");
             line[at + 9] = line[at + 9] == '9' ? '8' : '9';
             p["entry"] = line;
         }},
        {"entry actor", [](json& p) {
             std::string line = p["entry"];
             std::size_t at = line.find(" smtp ");
             if (at == std::string::npos) at = line.find(" token%20");
             line.insert(at + 1, "x");
             p["entry"] = line;
         }},
        {"entry not canonical", [](json& p) {
             std::string line = p["entry"];
             line.replace(line.find("msg-"), 1, "%6D");
             p["entry"] = line;
         }},
        {"entry_hash", [](json& p) {
             std::string hash = p["entry_hash"];
             hash[0] = hash[0] == '0' ? '1' : '0';
             p["entry_hash"] = hash;
         }},
        {"leaf_index", [](json& p) { p["leaf_index"] = p["leaf_index"].get<std::uint64_t>() ^ 1; }},
        {"leaf_index negative", [](json& p) { p["leaf_index"] = -1; }},
        {"tree_size", [](json& p) { p["tree_size"] = p["tree_size"].get<std::uint64_t>() + 1; }},
        {"path element", [](json& p) {
             std::string hash = p["path"][0];
             hash[5] = hash[5] == 'a' ? 'b' : 'a';
             p["path"][0] = hash;
         }},
        {"path truncated", [](json& p) { p["path"].erase(p["path"].size() - 1); }},
        {"path extended", [](json& p) { p["path"].push_back(std::string(64, '0')); }},
        {"path upper-case", [](json& p) {
             std::string hash = p["path"][0];
             for (char& c : hash) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
             p["path"][0] = hash;
         }},
        {"checkpoint size", [=](json& p) {
             set_text_line(p, "size", std::to_string(p["tree_size"].get<std::uint64_t>() + 1));
         }},
        {"checkpoint root", [=](json& p) { set_text_line(p, "root", std::string(64, 'a')); }},
        {"checkpoint head", [=](json& p) { set_text_line(p, "head", std::string(64, 'b')); }},
        {"checkpoint time", [=](json& p) { set_text_line(p, "time", "1700000123456788"); }},
        {"checkpoint key", [=](json& p) { set_text_line(p, "key", "0123456789abcdef"); }},
        {"checkpoint key_id field", [](json& p) { p["checkpoint"]["key_id"] = "0123456789abcdef"; }},
        {"checkpoint signature", [](json& p) {
             std::string signature = *decode_base64(p["checkpoint"]["signature_base64"].get<std::string>());
             signature[0] ^= 0x01;
             p["checkpoint"]["signature_base64"] = encode_base64(signature);
         }},
        {"checkpoint signature garbage", [](json& p) { p["checkpoint"]["signature_base64"] = "!!!"; }},
        {"public key", [=](json& p) { p["public_key_pem"] = other_pem; }},
        {"message sha256", [](json& p) {
             std::string hash = p["message"]["sha256"];
             hash[63] = hash[63] == '0' ? '1' : '0';
             p["message"]["sha256"] = hash;
         }},
        {"entry removed", [](json& p) { p.erase("entry"); }},
        {"path removed", [](json& p) { p.erase("path"); }},
        {"checkpoint removed", [](json& p) { p.erase("checkpoint"); }},
    };
}

TEST(ArchiveChain, ProofJsonVerifiesAndDetectsTampering) {
    ProofFixture fixture(37);
    const std::string public_pem = fixture.key->public_pem();
    for (std::uint64_t index : {std::uint64_t{0}, std::uint64_t{13}, std::uint64_t{31}, std::uint64_t{36}}) {
        const std::string proof_text = fixture.proof(index);
        Status verified = verify_proof_json(proof_text, public_pem);
        ASSERT_TRUE(verified.ok()) << index << ": " << verified.error().message;
        EXPECT_TRUE(verify_proof_json(proof_text, "").ok());

        const json proof = json::parse(proof_text);
        EXPECT_EQ(proof["version"], 1);
        EXPECT_EQ(proof["entry"], encode_entry(fixture.entries[index]));
        EXPECT_EQ(proof["entry_hash"], to_hex(fixture.hashes[index]));
        EXPECT_EQ(proof["leaf_index"], index);
        EXPECT_EQ(proof["tree_size"], 37);
        EXPECT_EQ(proof["checkpoint"]["text"], checkpoint_text(fixture.checkpoint));
        EXPECT_EQ(proof["checkpoint"]["key_id"], fixture.key->key_id());
        EXPECT_EQ(proof["public_key_pem"], public_pem);
        if (!fixture.entries[index].content.empty()) {
            EXPECT_EQ(proof["message"]["message_id"], "<msg-" + std::to_string(index) + "@example.org>");
            EXPECT_EQ(proof["message"]["sha256"], fixture.entries[index].content);
        } else {
            EXPECT_EQ(proof["message"]["message_id"], "<hold>");
        }

        Status wrong_key = verify_proof_json(proof_text, fixture.other_key->public_pem());
        ASSERT_FALSE(wrong_key.ok());
        EXPECT_EQ(wrong_key.error().code, "archive.proof_invalid");
    }

    // Entry 13 is an ingest (has message.sha256) and not the last one.
    const json original = json::parse(fixture.proof(13));
    for (const auto& [name, tamper] : proof_tamperings(fixture)) {
        json proof = original;
        tamper(proof);
        Status verified = verify_proof_json(proof.dump(), fixture.key->public_pem());
        ASSERT_FALSE(verified.ok()) << "tampered " << name << " still verifies";
        EXPECT_EQ(verified.error().code, "archive.proof_invalid");
        EXPECT_FALSE(verified.error().message.empty());
        EXPECT_FALSE(verify_proof_json(proof.dump(), "").ok()) << name;
    }
    // The head line binds the last entry: a proof of entry 35 against a
    // checkpoint whose head is entry 35 (but size 37) is refused.
    Checkpoint wrong_head = fixture.checkpoint;
    wrong_head.head = fixture.hashes[35];
    wrong_head = sign_checkpoint(*fixture.key, wrong_head);
    std::string last = proof_json(fixture.entries[36], 36, inclusion_path(fixture.hashes, 36, 37), wrong_head,
                                  fixture.key->public_pem(), "");
    EXPECT_FALSE(verify_proof_json(last, fixture.key->public_pem()).ok());
    EXPECT_FALSE(verify_proof_json("{not json", fixture.key->public_pem()).ok());
    EXPECT_FALSE(verify_proof_json("[]", fixture.key->public_pem()).ok());
}

TEST(ArchiveChain, ProofWithNastyEntryAndNoMessage) {
    ProofFixture fixture(5);
    Entry entry = nasty_entry();
    entry.seq = 0;
    std::vector<Hash> hashes = {entry_hash(entry)};
    Checkpoint checkpoint;
    checkpoint.tree_size = 1;
    checkpoint.root = merkle_root(hashes, 1);
    checkpoint.head = hashes[0];
    checkpoint = sign_checkpoint(*fixture.key, checkpoint);
    const std::string proof = proof_json(entry, 0, {}, checkpoint, fixture.key->public_pem(), "");
    EXPECT_FALSE(json::parse(proof).contains("message"));
    Status verified = verify_proof_json(proof, fixture.key->public_pem());
    EXPECT_TRUE(verified.ok()) << verified.error().message;
}

// ---- the third party's tool ----

fs::path verify_proof_script() {
    // tests/unit/<this file> -> <source root>/tools/verify-proof.py
    return fs::path(__FILE__).parent_path().parent_path().parent_path() / "tools" / "verify-proof.py";
}

TEST(ArchiveChain, PythonVerifierAcceptsProofAndRejectsTampering) {
    const fs::path script = verify_proof_script();
    ASSERT_TRUE(fs::exists(script)) << script;
    ProofFixture fixture(37);
    const fs::path& dir = fixture.dir.path();
    write_file(dir / "pub.pem", fixture.key->public_pem());
    write_file(dir / "other.pub.pem", fixture.other_key->public_pem());
    // The system interpreter: a pyenv shim in PATH costs ~0.5 s per start.
    const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
    const std::string tool = python + " '" + script.string() + "' ";

    for (std::uint64_t index : {std::uint64_t{13}, std::uint64_t{36}, std::uint64_t{0}}) {
        write_file(dir / "proof.json", fixture.proof(index));
        auto [status, output] = run_command(tool + "'" + (dir / "proof.json").string() + "' --key '" +
                                            (dir / "pub.pem").string() + "'");
        EXPECT_EQ(status, 0) << output;
        EXPECT_NE(output.find("proof OK: entry " + std::to_string(index) +
                              " is in the tree of size 37 signed at 2023-11-14T22:15:23.456789Z by key " +
                              fixture.key->key_id()),
                  std::string::npos)
            << output;
        auto [status_embedded, output_embedded] = run_command(tool + "'" + (dir / "proof.json").string() + "'");
        EXPECT_EQ(status_embedded, 0) << output_embedded;
        auto [status_other, output_other] = run_command(tool + "'" + (dir / "proof.json").string() + "' --key '" +
                                                        (dir / "other.pub.pem").string() + "'");
        EXPECT_NE(status_other, 0) << output_other;
    }

    // The nasty entry's escaping must agree between C++ and Python.
    {
        Entry entry = nasty_entry();
        entry.seq = 0;
        std::vector<Hash> hashes = {entry_hash(entry)};
        Checkpoint checkpoint;
        checkpoint.tree_size = 1;
        checkpoint.root = merkle_root(hashes, 1);
        checkpoint.head = hashes[0];
        checkpoint = sign_checkpoint(*fixture.key, checkpoint);
        write_file(dir / "nasty.json", proof_json(entry, 0, {}, checkpoint, fixture.key->public_pem(), ""));
        auto [status, output] = run_command(tool + "'" + (dir / "nasty.json").string() + "' --key '" +
                                            (dir / "pub.pem").string() + "'");
        EXPECT_EQ(status, 0) << output;
    }

    // Every tampering: two through the command line (exit status), all through
    // one interpreter that loads the script and calls its verify() per file.
    const json original = json::parse(fixture.proof(13));
    const auto tamperings = proof_tamperings(fixture);
    std::string files;
    for (std::size_t i = 0; i < tamperings.size(); ++i) {
        json proof = original;
        tamperings[i].second(proof);
        const fs::path file = dir / ("tampered-" + std::to_string(i) + ".json");
        write_file(file, proof.dump(2));
        files += " '" + file.string() + "'";
    }
    for (std::size_t i = 0; i < tamperings.size(); ++i) {
        if (tamperings[i].first != "entry time" && tamperings[i].first != "checkpoint signature") continue;
        auto [status, output] = run_command(tool + "'" + (dir / ("tampered-" + std::to_string(i) + ".json")).string() +
                                            "' --key '" + (dir / "pub.pem").string() + "'");
        EXPECT_NE(status, 0) << "tampered " << tamperings[i].first << " accepted: " << output;
        EXPECT_NE(output.find("proof FAILED"), std::string::npos) << tamperings[i].first << ": " << output;
    }
    write_file(dir / "verify_each.py",
               "import importlib.util, json, sys\n"
               "spec = importlib.util.spec_from_file_location('verify_proof', sys.argv[1])\n"
               "tool = importlib.util.module_from_spec(spec)\n"
               "spec.loader.exec_module(tool)\n"
               "pem = open(sys.argv[2]).read()\n"
               "for path in sys.argv[3:]:\n"
               "    try:\n"
               "        tool.verify(json.load(open(path)), pem)\n"
               "        print('ACCEPTED', path)\n"
               "    except tool.ProofError as error:\n"
               "        print('REJECTED', path, error)\n");
    auto [status, output] = run_command(python + " '" + (dir / "verify_each.py").string() + "' '" + script.string() +
                                        "' '" + (dir / "pub.pem").string() + "'" + files);
    ASSERT_EQ(status, 0) << output;
    for (std::size_t i = 0; i < tamperings.size(); ++i) {
        const std::string file = (dir / ("tampered-" + std::to_string(i) + ".json")).string();
        EXPECT_NE(output.find("REJECTED " + file + " "), std::string::npos)
            << "tampered " << tamperings[i].first << " not rejected:\n" << output;
    }
}

}  // namespace
}  // namespace postvault::archive
