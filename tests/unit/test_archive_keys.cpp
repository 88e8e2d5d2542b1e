// tests/unit/test_archive_keys.cpp — encryption at rest (archive/keys,
// archive/escrow).
//
// ArchiveKeys.* drive KeyRing against KEK files in a fresh temporary directory.
// ArchiveEscrow.* make real OpenPGP keys with the gpg CLI once per suite, and
// check escrow ciphertext with the real `gpg --decrypt` as well as with
// EscrowDecryptor. Every GnuPG home a test makes has its agent killed
// (gpgconf --kill all) and is removed. The *Timing tests print figures and
// assert nothing about time.
#include "archive/escrow.h"
#include "archive/keys.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "common/base64.h"

namespace postvault::archive {
namespace {

namespace fs = std::filesystem;

class TemporaryDirectory {
public:
    explicit TemporaryDirectory(const std::string& prefix = "postvault-keys-test") {
        std::string pattern = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TemporaryDirectory() {
        // A gpg-agent that was just told to stop may still be removing its
        // sockets while we remove the tree: try again briefly.
        std::error_code ignored;
        for (int attempt = 0; attempt < 20 && fs::exists(path_, ignored); ++attempt) {
            if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            fs::remove_all(path_, ignored);
        }
    }
    TemporaryDirectory(const TemporaryDirectory&) = delete;
    TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

    const fs::path& path() const { return path_; }
    std::string operator/(const std::string& name) const { return (path_ / name).string(); }

private:
    fs::path path_;
};

unsigned mode_of(const std::string& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) return 0xffff;
    return info.st_mode & 07777;
}

std::string read_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, std::string_view bytes) {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string make_message(std::size_t size, unsigned seed) {
    std::string message = "Subject: archive test " + std::to_string(seed) + "\r\n\r\n";
    std::mt19937 random(seed);
    while (message.size() < size) message += static_cast<char>(random() & 0xff);   // binary on purpose
    return message;
}

// ---------------------------------------------------------------- KeyRing

TEST(ArchiveKeys, CreatesPrivateFileAndDirectory) {
    TemporaryDirectory dir;
    std::string path = dir / "state/keys/archive.keks";
    auto ring = KeyRing::create_or_load(path);
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    EXPECT_EQ(mode_of(path), 0600u);
    EXPECT_EQ(mode_of(dir / "state"), 0700u);
    EXPECT_EQ(mode_of(dir / "state/keys"), 0700u);
    EXPECT_EQ(ring->current_id(), "kek-1");
    EXPECT_EQ(ring->ids(), std::vector<std::string>{"kek-1"});

    std::string text = read_file(path);
    EXPECT_EQ(text.rfind("postvault-kek-file 1\n", 0), 0u) << text;
    EXPECT_NE(text.find("\nkek-1 "), std::string::npos) << text;

    // Loading again gives the same key, not a new one.
    auto again = KeyRing::create_or_load(path);
    ASSERT_TRUE(again.ok()) << again.error().message;
    auto sealed = ring->seal("hello", "blob-1");
    ASSERT_TRUE(sealed.ok()) << sealed.error().message;
    auto opened = again->open(sealed->wrapped_key, sealed->ciphertext, "blob-1");
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_EQ(*opened, "hello");
}

TEST(ArchiveKeys, RoundTrip) {
    TemporaryDirectory dir;
    auto ring = KeyRing::create_or_load(dir / "keks");
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    for (std::size_t size : {0u, 1u, 15u, 16u, 17u, 10240u, 1u << 20}) {
        std::string plaintext = make_message(size, static_cast<unsigned>(size));
        plaintext.resize(size);
        auto sealed = ring->seal(plaintext, "blob-" + std::to_string(size));
        ASSERT_TRUE(sealed.ok()) << sealed.error().message;
        EXPECT_EQ(sealed->ciphertext.size(), size + 12 + 16);
        EXPECT_EQ(sealed->wrapped_key.rfind("dek1:kek-1:", 0), 0u) << sealed->wrapped_key;
        if (size >= 16) {
            EXPECT_EQ(sealed->ciphertext.find(plaintext.substr(0, 16)), std::string::npos);
        }
        auto opened = ring->open(sealed->wrapped_key, sealed->ciphertext, "blob-" + std::to_string(size));
        ASSERT_TRUE(opened.ok()) << opened.error().message;
        EXPECT_EQ(*opened, plaintext);
    }
    // Fresh data key and nonce per seal: same input, different output.
    auto first = ring->seal("same", "blob");
    auto second = ring->seal("same", "blob");
    ASSERT_TRUE(first.ok() && second.ok());
    EXPECT_NE(first->ciphertext, second->ciphertext);
    EXPECT_NE(first->wrapped_key, second->wrapped_key);
}

TEST(ArchiveKeys, TamperedCiphertextFailsAuthentication) {
    TemporaryDirectory dir;
    auto ring = KeyRing::create_or_load(dir / "keks");
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    std::string plaintext = make_message(10240, 7);
    auto sealed = ring->seal(plaintext, "blob-7");
    ASSERT_TRUE(sealed.ok()) << sealed.error().message;
    // One byte in the nonce, the body, and the tag.
    for (std::size_t position : {std::size_t{0}, std::size_t{11}, std::size_t{12}, std::size_t{5000},
                                 sealed->ciphertext.size() - 1}) {
        std::string tampered = sealed->ciphertext;
        tampered[position] = static_cast<char>(tampered[position] ^ 0x01);
        auto opened = ring->open(sealed->wrapped_key, tampered, "blob-7");
        ASSERT_FALSE(opened.ok()) << "byte " << position;
        EXPECT_EQ(opened.error().code, "archive.auth_failed") << "byte " << position;
    }
    // Truncated below nonce + tag is malformed, not a tag mismatch.
    auto truncated = ring->open(sealed->wrapped_key, sealed->ciphertext.substr(0, 27), "blob-7");
    ASSERT_FALSE(truncated.ok());
    EXPECT_EQ(truncated.error().code, "archive.corrupt");
    // A byte cut off the end is a tag mismatch.
    auto shortened = ring->open(sealed->wrapped_key, sealed->ciphertext.substr(0, sealed->ciphertext.size() - 1),
                                "blob-7");
    ASSERT_FALSE(shortened.ok());
    EXPECT_EQ(shortened.error().code, "archive.auth_failed");
}

TEST(ArchiveKeys, TamperedWrappedKeyIsRefused) {
    TemporaryDirectory dir;
    auto ring = KeyRing::create_or_load(dir / "keks");
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    auto sealed = ring->seal("secret mail", "blob-1");
    ASSERT_TRUE(sealed.ok()) << sealed.error().message;

    const std::string prefix = "dek1:kek-1:";
    ASSERT_EQ(sealed->wrapped_key.rfind(prefix, 0), 0u);
    auto wrapped = decode_base64(std::string_view(sealed->wrapped_key).substr(prefix.size()));
    ASSERT_TRUE(wrapped.has_value());
    ASSERT_EQ(wrapped->size(), 40u);
    for (std::size_t position : {0u, 8u, 20u, 39u}) {
        std::string flipped = *wrapped;
        flipped[position] = static_cast<char>(flipped[position] ^ 0x80);
        auto opened = ring->open(prefix + encode_base64(flipped), sealed->ciphertext, "blob-1");
        ASSERT_FALSE(opened.ok()) << "byte " << position;
        EXPECT_EQ(opened.error().code, "archive.auth_failed") << "byte " << position;
    }
    for (std::string malformed : {std::string(""), std::string("dek1:kek-1"), std::string("dek2:kek-1:AAAA"),
                                  prefix + "not base64!", prefix + encode_base64(wrapped->substr(0, 32)),
                                  std::string("dek1::") + encode_base64(*wrapped)}) {
        auto opened = ring->open(malformed, sealed->ciphertext, "blob-1");
        ASSERT_FALSE(opened.ok()) << malformed;
        EXPECT_EQ(opened.error().code, "archive.corrupt") << malformed;
    }
    // The error text never carries key material.
    auto opened = ring->open(prefix + "not base64!", sealed->ciphertext, "blob-1");
    EXPECT_EQ(opened.error().message.find(encode_base64(*wrapped)), std::string::npos);
}

TEST(ArchiveKeys, WrongBlobIdOrSwappedBlobFailsAuthentication) {
    TemporaryDirectory dir;
    auto ring = KeyRing::create_or_load(dir / "keks");
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    auto a = ring->seal("message A", "blob-a");
    auto b = ring->seal("message B", "blob-b");
    ASSERT_TRUE(a.ok() && b.ok());

    auto wrong_id = ring->open(a->wrapped_key, a->ciphertext, "blob-b");
    ASSERT_FALSE(wrong_id.ok());
    EXPECT_EQ(wrong_id.error().code, "archive.auth_failed");
    // B's bytes stored under A's id (with either wrapped key) do not open.
    auto swapped = ring->open(a->wrapped_key, b->ciphertext, "blob-a");
    ASSERT_FALSE(swapped.ok());
    EXPECT_EQ(swapped.error().code, "archive.auth_failed");
    auto swapped_both = ring->open(b->wrapped_key, b->ciphertext, "blob-a");
    ASSERT_FALSE(swapped_both.ok());
    EXPECT_EQ(swapped_both.error().code, "archive.auth_failed");
}

TEST(ArchiveKeys, RotateKeepsOldKeysAndSurvivesReload) {
    TemporaryDirectory dir;
    std::string path = dir / "keks";
    auto ring = KeyRing::create_or_load(path);
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    auto old_blob = ring->seal("sealed before rotation", "blob-old");
    ASSERT_TRUE(old_blob.ok());

    auto rotated = ring->rotate();
    ASSERT_TRUE(rotated.ok()) << rotated.error().message;
    EXPECT_EQ(*rotated, "kek-2");
    EXPECT_EQ(ring->current_id(), "kek-2");
    EXPECT_EQ(ring->ids(), (std::vector<std::string>{"kek-1", "kek-2"}));
    EXPECT_EQ(mode_of(path), 0600u);

    auto new_blob = ring->seal("sealed after rotation", "blob-new");
    ASSERT_TRUE(new_blob.ok());
    EXPECT_EQ(new_blob->wrapped_key.rfind("dek1:kek-2:", 0), 0u) << new_blob->wrapped_key;
    EXPECT_EQ(old_blob->wrapped_key.rfind("dek1:kek-1:", 0), 0u) << old_blob->wrapped_key;

    auto old_opened = ring->open(old_blob->wrapped_key, old_blob->ciphertext, "blob-old");
    ASSERT_TRUE(old_opened.ok()) << old_opened.error().message;
    EXPECT_EQ(*old_opened, "sealed before rotation");

    auto reloaded = KeyRing::load(path);
    ASSERT_TRUE(reloaded.ok()) << reloaded.error().message;
    EXPECT_EQ(reloaded->current_id(), "kek-2");
    EXPECT_EQ(reloaded->ids(), (std::vector<std::string>{"kek-1", "kek-2"}));
    auto a = reloaded->open(old_blob->wrapped_key, old_blob->ciphertext, "blob-old");
    auto b = reloaded->open(new_blob->wrapped_key, new_blob->ciphertext, "blob-new");
    ASSERT_TRUE(a.ok()) << a.error().message;
    ASSERT_TRUE(b.ok()) << b.error().message;
    EXPECT_EQ(*b, "sealed after rotation");

    // No temporary file is left beside the key file (only it and its lock).
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir.path())) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"keks", "keks.lock"}));
}

TEST(ArchiveKeys, RotationsFromTwoHoldersKeepEveryKey) {
    TemporaryDirectory dir;
    std::string path = dir / "keks";
    auto first = KeyRing::create_or_load(path);
    ASSERT_TRUE(first.ok()) << first.error().message;
    auto second = KeyRing::load(path);   // e.g. the daemon and an admin command
    ASSERT_TRUE(second.ok()) << second.error().message;

    ASSERT_EQ(*first->rotate(), "kek-2");
    auto sealed = first->seal("under kek-2", "blob");
    ASSERT_TRUE(sealed.ok());
    auto rotated = second->rotate();   // re-reads the file: kek-2 is kept
    ASSERT_TRUE(rotated.ok()) << rotated.error().message;
    EXPECT_EQ(*rotated, "kek-3");

    auto reloaded = KeyRing::load(path);
    ASSERT_TRUE(reloaded.ok()) << reloaded.error().message;
    EXPECT_EQ(reloaded->ids(), (std::vector<std::string>{"kek-1", "kek-2", "kek-3"}));
    auto opened = reloaded->open(sealed->wrapped_key, sealed->ciphertext, "blob");
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_EQ(*opened, "under kek-2");
}

TEST(ArchiveKeys, RefusesKeyFileOpenToOthers) {
    TemporaryDirectory dir;
    std::string path = dir / "keks";
    ASSERT_TRUE(KeyRing::create_or_load(path).ok());
    for (mode_t mode : {0644, 0640, 0604, 0660}) {
        ASSERT_EQ(::chmod(path.c_str(), mode), 0);
        auto loaded = KeyRing::load(path);
        ASSERT_FALSE(loaded.ok()) << std::oct << mode;
        EXPECT_EQ(loaded.error().code, "archive.key_mode");
        EXPECT_NE(loaded.error().message.find("chmod 600"), std::string::npos) << loaded.error().message;
        auto created = KeyRing::create_or_load(path);
        ASSERT_FALSE(created.ok());
        EXPECT_EQ(created.error().code, "archive.key_mode");
    }
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
    EXPECT_TRUE(KeyRing::load(path).ok());
}

TEST(ArchiveKeys, LoadNeverCreates) {
    TemporaryDirectory dir;
    std::string path = dir / "missing/keks";
    auto loaded = KeyRing::load(path);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.error().code, "archive.key_file");
    EXPECT_FALSE(fs::exists(path));
    EXPECT_FALSE(fs::exists(dir / "missing"));
}

TEST(ArchiveKeys, MalformedKeyFileIsRefusedWithLine) {
    TemporaryDirectory dir;
    std::string path = dir / "keks";
    auto write_private = [&](std::string_view text) {
        write_file(path, text);
        ::chmod(path.c_str(), 0600);
    };
    std::string good_key = encode_base64(std::string(32, 'k'));
    struct Case {
        std::string text;
        std::string expect_in_message;
    };
    for (const Case& c : std::vector<Case>{
             {"", "empty"},
             {"kek-1 " + good_key + "\n", ":1:"},
             {"postvault-kek-file 1\n", "no KEK"},
             {"postvault-kek-file 1\nkek-1 " + encode_base64(std::string(16, 'k')) + "\n", ":2:"},
             {"postvault-kek-file 1\n# comment\nkek-1 " + good_key + "\nkek-1 " + good_key + "\n", ":4:"},
             {"postvault-kek-file 1\nbad:id " + good_key + "\n", ":2:"},
             {"postvault-kek-file 1\nkek-1\n", ":2:"},
         }) {
        write_private(c.text);
        auto loaded = KeyRing::load(path);
        ASSERT_FALSE(loaded.ok()) << c.text;
        EXPECT_EQ(loaded.error().code, "archive.key_file") << c.text;
        EXPECT_NE(loaded.error().message.find(c.expect_in_message), std::string::npos) << loaded.error().message;
        EXPECT_EQ(loaded.error().message.find(good_key), std::string::npos) << "key material in an error message";
    }
    // A hand-written file in the documented format loads; the last key is current.
    write_private("postvault-kek-file 1\n# comment\nold " + good_key + "\nnew " + encode_base64(std::string(32, 'n')) +
                  "\n");
    auto loaded = KeyRing::load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    EXPECT_EQ(loaded->current_id(), "new");
    EXPECT_EQ(*loaded->rotate(), "kek-1");
}

TEST(ArchiveKeys, UnknownKekIsNamed) {
    TemporaryDirectory dir;
    auto writer = KeyRing::create_or_load(dir / "writer.keks");
    auto reader = KeyRing::create_or_load(dir / "reader.keks");   // holds only its own kek-1
    ASSERT_TRUE(writer.ok() && reader.ok());
    ASSERT_TRUE(writer->rotate().ok());
    ASSERT_TRUE(writer->rotate().ok());
    auto sealed = writer->seal("text", "blob");
    ASSERT_TRUE(sealed.ok());
    auto opened = reader->open(sealed->wrapped_key, sealed->ciphertext, "blob");
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.error().code, "archive.unknown_kek");
    EXPECT_NE(opened.error().message.find("kek-3"), std::string::npos) << opened.error().message;

    // Same id, different key (another installation's kek-1): a tag failure.
    auto other = KeyRing::create_or_load(dir / "other.keks");
    ASSERT_TRUE(other.ok());
    auto foreign = other->seal("text", "blob");
    auto mismatch = reader->open(foreign->wrapped_key, foreign->ciphertext, "blob");
    ASSERT_FALSE(mismatch.ok());
    EXPECT_EQ(mismatch.error().code, "archive.auth_failed");
}

TEST(ArchiveKeys, CopiesAndConcurrentUse) {
    TemporaryDirectory dir;
    auto ring = KeyRing::create_or_load(dir / "keks");
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    const KeyRing shared = *ring;   // a copy shares the key table
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (unsigned i = 0; i < 300; ++i) {
                std::string id = "blob-" + std::to_string(t) + "-" + std::to_string(i);
                std::string plaintext = make_message(2000 + i, t * 1000 + i);
                auto sealed = shared.seal(plaintext, id);
                if (!sealed) {
                    ++failures;
                    continue;
                }
                auto opened = shared.open(sealed->wrapped_key, sealed->ciphertext, id);
                if (!opened || *opened != plaintext) ++failures;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(failures.load(), 0);
}

TEST(ArchiveKeys, SealOpenTiming) {
    TemporaryDirectory dir;
    auto ring = KeyRing::create_or_load(dir / "keks");
    ASSERT_TRUE(ring.ok()) << ring.error().message;
    const std::string plaintext = make_message(10 * 1024, 3);
    auto sample = ring->seal(plaintext, "blob-0123456789abcdef");
    ASSERT_TRUE(sample.ok());

    // Best of several batches: the figure for the code, not for the machine's
    // other tenants.
    constexpr int kBatches = 5, kRounds = 4000;
    double best_seal = 1e9, best_open = 1e9;
    std::size_t total = 0;
    for (int batch = 0; batch < kBatches; ++batch) {
        auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < kRounds; ++i) total += ring->seal(plaintext, "blob-0123456789abcdef")->ciphertext.size();
        auto middle = std::chrono::steady_clock::now();
        for (int i = 0; i < kRounds; ++i)
            total += ring->open(sample->wrapped_key, sample->ciphertext, "blob-0123456789abcdef")->size();
        auto end = std::chrono::steady_clock::now();
        best_seal = std::min(best_seal, std::chrono::duration<double, std::micro>(middle - start).count() / kRounds);
        best_open = std::min(best_open, std::chrono::duration<double, std::micro>(end - middle).count() / kRounds);
    }
    EXPECT_EQ(total, (2 * plaintext.size() + 28) * kRounds * kBatches);
    std::printf("[ timing   ] KeyRing 10 KiB blob: seal %.2f us, open %.2f us per call (best of %d x %d)\n",
                best_seal, best_open, kBatches, kRounds);
}

// ---------------------------------------------------------------- escrow

std::string shell_quote(const std::string& text) {
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

// Runs a shell command; its stdout goes to `output` when given. gpg's
// chatter on stderr goes to the suite's log file.
int run(const std::string& command, const std::string& log_path, std::string* output = nullptr) {
    std::string line = command;
    std::string capture = log_path + ".out";
    line += output != nullptr ? " > " + shell_quote(capture) : " > /dev/null";
    line += " 2>> " + shell_quote(log_path);
    int status = std::system(line.c_str());
    if (output != nullptr) *output = read_file(capture);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The gpg command with a home, batch mode and loopback passphrase.
std::string gpg(const std::string& home, const std::string& passphrase = "") {
    return "gpg --homedir " + shell_quote(home) + " --batch --no-tty --pinentry-mode loopback --passphrase " +
           shell_quote(passphrase) + " ";
}

void kill_agents(const std::string& home) {
    std::string command = "gpgconf --homedir " + shell_quote(home) + " --kill all > /dev/null 2>&1";
    if (std::system(command.c_str()) != 0) { /* nothing was running */ }
}

// This process's temporary escrow homes under `base` (other processes share the
// directory, and this suite's other tests may create and remove their own: compare sets).
std::set<std::string> escrow_homes(const std::string& base) {
    std::set<std::string> homes;
    std::error_code ignored;
    const std::string own = "postvault-escrow-" + std::to_string(::getpid()) + "-";
    for (const auto& entry : fs::directory_iterator(base, ignored))
        if (entry.path().filename().string().rfind(own, 0) == 0) homes.insert(entry.path().string());
    return homes;
}

// Homes in `after` that were not in `before`.
std::vector<std::string> new_homes(const std::set<std::string>& before, const std::set<std::string>& after) {
    std::vector<std::string> added;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(added));
    return added;
}

constexpr const char* kKeyTwoPassphrase = "escrow two: correct horse";

// Three keypairs made once for the suite: 1 and 2 can encrypt (2 has a
// passphrase), 3 can only sign.
class ArchiveEscrow : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        directory = new TemporaryDirectory("postvault-escrow-test");
        log = *directory / "gpg.log";
        generator_home = *directory / "gen";
        fs::create_directory(generator_home);
        ::chmod(generator_home.c_str(), 0700);

        fingerprint1 = make_key("Escrow One <escrow1@example.test>", "", true);
        fingerprint2 = make_key("Escrow Two <escrow2@example.test>", kKeyTwoPassphrase, true);
        fingerprint3 = make_key("Signer Three <signer3@example.test>", "", false);
        public1 = *directory / "escrow1.gpg";   // binary
        public2 = *directory / "escrow2.asc";   // armored
        public3 = *directory / "signer3.gpg";
        secret1 = *directory / "escrow1-secret.gpg";
        secret2 = *directory / "escrow2-secret.asc";
        std::string g = gpg(generator_home);
        std::string output;
        ASSERT_EQ(run(g + "--export " + fingerprint1, log, &output), 0);
        write_file(public1, output);
        ASSERT_EQ(run(g + "--armor --export " + fingerprint2, log, &output), 0);
        write_file(public2, output);
        ASSERT_EQ(run(g + "--export " + fingerprint3, log, &output), 0);
        write_file(public3, output);
        ASSERT_EQ(run(g + "--export-secret-keys " + fingerprint1, log, &output), 0);
        write_file(secret1, output);
        ASSERT_EQ(run(gpg(generator_home, kKeyTwoPassphrase) + "--armor --export-secret-keys " + fingerprint2, log,
                      &output),
                  0);
        write_file(secret2, output);
        ASSERT_NE(read_file(secret2).find("PRIVATE KEY"), std::string::npos);
    }

    static void TearDownTestSuite() {
        kill_agents(generator_home);
        delete directory;
        directory = nullptr;
    }

    static std::string make_key(const std::string& user_id, const std::string& passphrase, bool encryption) {
        std::string g = gpg(generator_home, passphrase);
        EXPECT_EQ(run(g + "--quick-gen-key " + shell_quote(user_id) + " ed25519 cert,sign 0", log), 0)
            << read_file(log);
        std::string listing;
        EXPECT_EQ(run(g + "--with-colons --list-keys " + shell_quote(user_id), log, &listing), 0);
        std::string fingerprint;
        std::istringstream lines(listing);
        for (std::string line; std::getline(lines, line);) {
            if (line.rfind("fpr:", 0) == 0) {
                std::vector<std::string> fields;
                std::istringstream parts(line);
                for (std::string field; std::getline(parts, field, ':');) fields.push_back(field);
                if (fields.size() > 9) fingerprint = fields[9];
                break;
            }
        }
        EXPECT_EQ(fingerprint.size(), 40u) << listing;
        if (encryption) {
            EXPECT_EQ(run(g + "--quick-add-key " + fingerprint + " cv25519 encr 0", log), 0);
        }
        return fingerprint;
    }

    // Decrypts `ciphertext` with the gpg CLI in a fresh home holding only
    // `secret_file`; the plaintext, or "<gpg failed>".
    static std::string decrypt_with_gpg(const std::string& secret_file, const std::string& passphrase,
                                        const std::string& ciphertext) {
        TemporaryDirectory home("postvault-gpg-home");
        ::chmod(home.path().c_str(), 0700);
        std::string message = home / "message.gpg";
        write_file(message, ciphertext);
        std::string g = gpg(home.path().string(), passphrase);
        std::string output = "<gpg failed>";
        if (run(g + "--import " + shell_quote(secret_file), log) == 0 &&
            run(g + "--decrypt " + shell_quote(message), log, &output) != 0)
            output = "<gpg failed>";
        kill_agents(home.path().string());
        return output;
    }

    static inline TemporaryDirectory* directory = nullptr;
    static inline std::string log, generator_home;
    static inline std::string fingerprint1, fingerprint2, fingerprint3;
    static inline std::string public1, public2, public3, secret1, secret2;
};

TEST_F(ArchiveEscrow, EncryptsToEveryKeyAndRealGpgDecrypts) {
    TemporaryDirectory work("postvault-escrow-work");
    std::string home = work / "archive/gnupg";   // missing parents are created 0700
    auto escrow = EscrowEncryptor::open({public1, public2}, home);
    ASSERT_TRUE(escrow.ok()) << escrow.error().message;
    EXPECT_EQ(mode_of(home), 0700u);
    EXPECT_EQ(escrow->fingerprints(), (std::vector<std::string>{fingerprint1, fingerprint2}));

    std::string plaintext = make_message(10 * 1024, 11);
    auto ciphertext = escrow->encrypt(plaintext);
    ASSERT_TRUE(ciphertext.ok()) << ciphertext.error().message;
    ASSERT_FALSE(ciphertext->empty());
    EXPECT_NE(static_cast<unsigned char>((*ciphertext)[0]) & 0x80, 0) << "not a binary OpenPGP packet";
    EXPECT_EQ(ciphertext->find("-----BEGIN PGP"), std::string::npos);

    // Each key alone decrypts, with the real gpg.
    EXPECT_EQ(decrypt_with_gpg(secret1, "", *ciphertext), plaintext);
    EXPECT_EQ(decrypt_with_gpg(secret2, kKeyTwoPassphrase, *ciphertext), plaintext);
    // ... and with the wrong passphrase, key 2 does not.
    EXPECT_EQ(decrypt_with_gpg(secret2, "wrong", *ciphertext), "<gpg failed>");

    // Public-key work needs no gpg-agent in the gateway's home.
    EXPECT_FALSE(fs::exists(home + "/S.gpg-agent"));
    kill_agents(home);
}

TEST_F(ArchiveEscrow, DecryptorRoundTripAndCleanup) {
    TemporaryDirectory work("postvault-escrow-work");
    auto escrow = EscrowEncryptor::open({public1, public2}, work / "gnupg");
    ASSERT_TRUE(escrow.ok()) << escrow.error().message;
    std::string plaintext = make_message(10 * 1024, 12);
    auto ciphertext = escrow->encrypt(plaintext);
    ASSERT_TRUE(ciphertext.ok()) << ciphertext.error().message;

    std::string home;
    {
        auto decryptor = EscrowDecryptor::open(secret1);
        ASSERT_TRUE(decryptor.ok()) << decryptor.error().message;
        home = decryptor->gnupg_home();
        ASSERT_FALSE(home.empty());
        EXPECT_TRUE(fs::is_directory(home));
        EXPECT_EQ(mode_of(home), 0700u);
        EXPECT_LT(home.size(), 80u) << "agent socket path must fit";
        if (::access("/dev/shm", W_OK) == 0) {
            EXPECT_EQ(home.rfind("/dev/shm/", 0), 0u) << home;
        }

        auto decrypted = decryptor->decrypt(*ciphertext);
        ASSERT_TRUE(decrypted.ok()) << decrypted.error().message;
        EXPECT_EQ(*decrypted, plaintext);

        EscrowDecryptor moved = std::move(*decryptor);   // the home follows the object
        EXPECT_EQ(moved.gnupg_home(), home);
        EXPECT_TRUE(fs::is_directory(home));
        auto again = moved.decrypt(*ciphertext);
        ASSERT_TRUE(again.ok()) << again.error().message;
        EXPECT_EQ(*again, plaintext);

        auto garbage = moved.decrypt("this is not an OpenPGP message");
        ASSERT_FALSE(garbage.ok());
        EXPECT_EQ(garbage.error().code, "archive.escrow_decrypt");
    }
    EXPECT_FALSE(fs::exists(home)) << home << " left behind";
}

TEST_F(ArchiveEscrow, DecryptorWithPassphrase) {
    TemporaryDirectory work("postvault-escrow-work");
    auto escrow = EscrowEncryptor::open({public2}, work / "gnupg");
    ASSERT_TRUE(escrow.ok()) << escrow.error().message;
    auto ciphertext = escrow->encrypt("for key two only");
    ASSERT_TRUE(ciphertext.ok()) << ciphertext.error().message;

    {
        auto decryptor = EscrowDecryptor::open(secret2, kKeyTwoPassphrase);
        ASSERT_TRUE(decryptor.ok()) << decryptor.error().message;
        auto decrypted = decryptor->decrypt(*ciphertext);
        ASSERT_TRUE(decrypted.ok()) << decrypted.error().message;
        EXPECT_EQ(*decrypted, "for key two only");
    }

    std::string base = fs::path(EscrowDecryptor::open(secret1)->gnupg_home()).parent_path().string();
    const auto homes_before = escrow_homes(base);
    auto wrong = EscrowDecryptor::open(secret2, "not the passphrase");
    ASSERT_FALSE(wrong.ok());
    EXPECT_EQ(wrong.error().code, "archive.escrow_decrypt");
    EXPECT_EQ(wrong.error().message.find("not the passphrase"), std::string::npos) << "passphrase in a message";
    EXPECT_TRUE(new_homes(homes_before, escrow_homes(base)).empty()) << "failed open left its home behind";

    // Key 1 cannot read a message only for key 2.
    auto other = EscrowDecryptor::open(secret1);
    ASSERT_TRUE(other.ok()) << other.error().message;
    auto refused = other->decrypt(*ciphertext);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, "archive.escrow_decrypt");
    EXPECT_NE(refused.error().message.find("ecret key"), std::string::npos) << refused.error().message;
}

TEST_F(ArchiveEscrow, UnusableKeyFilesAreRefused) {
    TemporaryDirectory work("postvault-escrow-work");
    std::string garbage = work / "garbage.asc";
    write_file(garbage, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5Cg==\n-----END PGP PUBLIC KEY BLOCK-----\n");
    std::string random_bytes = work / "random.gpg";
    write_file(random_bytes, make_message(512, 5).substr(40));

    struct Case {
        std::vector<std::string> files;
        std::string named;
    };
    for (const Case& c : std::vector<Case>{{{public1, garbage}, garbage},
                                           {{random_bytes}, random_bytes},
                                           {{work / "missing.asc"}, work / "missing.asc"},
                                           {{public3}, public3},      // sign-only key
                                           {{secret1}, secret1},      // a secret key does not belong here
                                           {{secret2}, secret2}}) {
        auto escrow = EscrowEncryptor::open(c.files, work / "gnupg");
        ASSERT_FALSE(escrow.ok()) << c.named;
        EXPECT_EQ(escrow.error().code, "archive.escrow_key") << escrow.error().message;
        EXPECT_NE(escrow.error().message.find(c.named), std::string::npos) << escrow.error().message;
    }
    auto none = EscrowEncryptor::open({}, work / "gnupg");
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().code, "archive.escrow_key");

    auto no_secret = EscrowDecryptor::open(public1);
    ASSERT_FALSE(no_secret.ok());
    EXPECT_EQ(no_secret.error().code, "archive.escrow_key");
    kill_agents(work / "gnupg");
}

TEST_F(ArchiveEscrow, LongHomePathWorks) {
    // Longer than sun_path: fine, because public-key work starts no agent.
    TemporaryDirectory work("postvault-escrow-work");
    std::string home = work / (std::string(60, 'd') + "/" + std::string(60, 'e') + "/gnupg");
    ASSERT_GT(home.size(), 120u);
    auto escrow = EscrowEncryptor::open({public1}, home);
    ASSERT_TRUE(escrow.ok()) << escrow.error().message;
    auto ciphertext = escrow->encrypt("long home");
    ASSERT_TRUE(ciphertext.ok()) << ciphertext.error().message;
    EXPECT_EQ(decrypt_with_gpg(secret1, "", *ciphertext), "long home");
    kill_agents(home);
}

TEST_F(ArchiveEscrow, EncryptTimingAndConcurrency) {
    TemporaryDirectory work("postvault-escrow-work");
    auto escrow = EscrowEncryptor::open({public1, public2}, work / "gnupg");
    ASSERT_TRUE(escrow.ok()) << escrow.error().message;
    auto decryptor = EscrowDecryptor::open(secret1);
    ASSERT_TRUE(decryptor.ok()) << decryptor.error().message;
    const std::string plaintext = make_message(10 * 1024, 13);

    constexpr int kRounds = 40;
    auto start = std::chrono::steady_clock::now();
    std::string last;
    for (int i = 0; i < kRounds; ++i) {
        auto ciphertext = escrow->encrypt(plaintext);
        ASSERT_TRUE(ciphertext.ok()) << ciphertext.error().message;
        last = std::move(*ciphertext);
    }
    auto end = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(end - start).count() / kRounds;
    auto decrypt_start = std::chrono::steady_clock::now();
    auto decrypted = decryptor->decrypt(last);
    auto decrypt_end = std::chrono::steady_clock::now();
    ASSERT_TRUE(decrypted.ok()) << decrypted.error().message;
    EXPECT_EQ(*decrypted, plaintext);

    // Concurrent calls on one encryptor and one decryptor.
    constexpr int kThreads = 4, kPerThread = 10;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    auto concurrent_start = std::chrono::steady_clock::now();
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kPerThread; ++i) {
                std::string text = plaintext + std::to_string(t * 100 + i);
                auto ciphertext = escrow->encrypt(text);
                if (!ciphertext) {
                    ++failures;
                    continue;
                }
                auto back = decryptor->decrypt(*ciphertext);
                if (!back || *back != text) ++failures;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    auto concurrent_end = std::chrono::steady_clock::now();
    EXPECT_EQ(failures.load(), 0);
    std::printf("[ timing   ] escrow 10 KiB blob, 2 keys: encrypt %.2f ms per call sequential; decrypt %.2f ms; "
                "%d threads x %d encrypt+decrypt: %.2f ms per pair\n",
                ms, std::chrono::duration<double, std::milli>(decrypt_end - decrypt_start).count(), kThreads,
                kPerThread,
                std::chrono::duration<double, std::milli>(concurrent_end - concurrent_start).count() /
                    (kThreads * kPerThread));
    kill_agents(work / "gnupg");
}

}  // namespace
}  // namespace postvault::archive
