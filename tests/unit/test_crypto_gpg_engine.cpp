// Tests for gateway/crypto/gpg_engine.h: the in-process engine and the postvault-pgp workers give
// the same results, checked against each other and against the gpg command line (encrypt here,
// decrypt there and back; signatures verified and a tampered byte refused); errors keep their
// code and class across the worker boundary; many threads share few workers; a worker that dies
// is replaced without failing the request; one that hangs is killed at the timeout.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "gateway/crypto/gpg_engine.h"
#include "tests/unit/gpg_home.h"

namespace postvault::crypto {
namespace {

using testing_gpg::read_file;
using testing_gpg::run;
using testing_gpg::write_file;

std::string sample_plaintext() {
    std::string text = "Content-Type: application/octet-stream\r\n\r\n";
    for (int index = 0; index < 5000; ++index) text += static_cast<char>((index * 31 + 7) % 256);
    return text;
}

class CryptoGpgEngine : public testing_gpg::GpgHomeTest {
protected:
    std::unique_ptr<GpgEngine> worker_engine(unsigned processes = 2, std::chrono::seconds timeout = std::chrono::seconds(60),
                                             const std::string& program = POSTVAULT_PGP_WORKER) {
        WorkerOptions options;
        options.program = program;
        options.home = home_->string();
        options.processes = processes;
        options.timeout = timeout;
        return worker_gpg_engine(options);
    }

    // postvault-pgp processes started by this process on this suite's home (not the copies
    // GPGME forks from a worker on the way to gpg: their parent is the worker).
    static int workers_running() {
        static std::atomic<int> calls{0};
        const std::filesystem::path out = *home_ / ("pids-" + std::to_string(++calls));
        if (run("pgrep -P " + std::to_string(::getpid()) + " -f 'postvault-pgp --home " + home_->string() + "$' > " +
                out.string()) != 0)
            return 0;
        const std::string pids = read_file(out);
        return static_cast<int>(std::count(pids.begin(), pids.end(), '\n'));
    }

    // The pids of the `gpg --server` sessions this process runs on this suite's home, one per line.
    static std::string gpg_servers() {
        const std::filesystem::path out = *home_ / "gpg-servers";
        run("pgrep -P " + std::to_string(::getpid()) + " -f '[g]pg --server --homedir " + home_->string() + " ' > " +
            out.string());
        return read_file(out);
    }

    static std::string decrypt_with_gpg(const std::string& armored) {
        write_file(file("session.asc"), armored);
        std::filesystem::remove(file("session.out"));
        if (run(gpg() + "--decrypt -o " + file("session.out").string() + " " + file("session.asc").string()) != 0)
            return "(gpg could not decrypt)";
        return read_file(file("session.out"));
    }
};

TEST_F(CryptoGpgEngine, WorkerAndLocalEnginesReadEachOthersOutput) {
    auto local = local_gpg_engine(home_->string());
    auto worker = worker_engine();
    const std::string plaintext = sample_plaintext();
    for (auto [writer, reader] : {std::pair{worker.get(), local.get()}, std::pair{local.get(), worker.get()}}) {
        auto encrypted = writer->encrypt(plaintext, {*fingerprint_}, *fingerprint_);
        ASSERT_TRUE(encrypted.ok()) << encrypted.error().message;
        EXPECT_EQ(encrypted->rfind("-----BEGIN PGP MESSAGE-----", 0), 0u);
        auto decrypted = reader->decrypt(*encrypted);
        ASSERT_TRUE(decrypted.ok()) << decrypted.error().message;
        EXPECT_EQ(decrypted->plaintext, plaintext);
        EXPECT_FALSE(decrypted->recipients.empty());
        EXPECT_TRUE(decrypted->signature.present);
        EXPECT_TRUE(decrypted->signature.valid);
        EXPECT_EQ(decrypted->signature.summary, "good");
        EXPECT_TRUE(fingerprint_->ends_with(decrypted->signature.signer) ||
                    decrypted->signature.signer.size() == 40) << decrypted->signature.signer;

        auto signature = writer->sign_detached(plaintext, *fingerprint_);
        ASSERT_TRUE(signature.ok()) << signature.error().message;
        EXPECT_EQ(signature->micalg.rfind("pgp-", 0), 0u);
        auto verified = reader->verify(plaintext, signature->signature);
        ASSERT_TRUE(verified.ok()) << verified.error().message;
        EXPECT_TRUE(verified->valid);
        std::string tampered = plaintext;
        tampered[tampered.size() / 2] ^= 0x01;
        auto refused = reader->verify(tampered, signature->signature);
        ASSERT_TRUE(refused.ok()) << refused.error().message;
        EXPECT_TRUE(refused->present);
        EXPECT_FALSE(refused->valid);
        EXPECT_EQ(refused->summary, "bad");
    }
}

TEST_F(CryptoGpgEngine, WorkerOutputDecryptsAndVerifiesWithTheGpgCommandLine) {
    auto worker = worker_engine();
    const std::string plaintext = sample_plaintext();
    auto encrypted = worker->encrypt(plaintext, {*fingerprint_}, "");
    ASSERT_TRUE(encrypted.ok()) << encrypted.error().message;
    write_file(file("worker.asc"), *encrypted);
    ASSERT_EQ(run(gpg() + "--decrypt -o " + file("worker.out").string() + " " + file("worker.asc").string()), 0);
    EXPECT_EQ(read_file(file("worker.out")), plaintext);

    auto signature = worker->sign_detached(plaintext, *fingerprint_);
    ASSERT_TRUE(signature.ok()) << signature.error().message;
    write_file(file("worker.data"), plaintext);
    write_file(file("worker.sig"), signature->signature);
    EXPECT_EQ(run(gpg() + "--verify " + file("worker.sig").string() + " " + file("worker.data").string()), 0);
}

TEST_F(CryptoGpgEngine, EncryptionKeepsOneGpgRunningWhoseOutputTheGpgCommandLineDecrypts) {
    auto local = local_gpg_engine(home_->string());
    const std::string plaintext = sample_plaintext();
    std::string first_server;
    for (int round = 0; round < 3; ++round) {
        auto encrypted = local->encrypt(plaintext + std::to_string(round), {*fingerprint_}, "");
        ASSERT_TRUE(encrypted.ok()) << encrypted.error().message;
        EXPECT_EQ(decrypt_with_gpg(*encrypted), plaintext + std::to_string(round));
        const std::string servers = gpg_servers();
        EXPECT_EQ(std::count(servers.begin(), servers.end(), '\n'), 1) << servers;
        if (round == 0) first_server = servers;
        EXPECT_EQ(servers, first_server) << "the same gpg serves every message";
    }
    // Signed messages go through GPGME and leave the session alone.
    auto signed_too = local->encrypt(plaintext, {*fingerprint_}, *fingerprint_);
    ASSERT_TRUE(signed_too.ok()) << signed_too.error().message;
    EXPECT_EQ(decrypt_with_gpg(*signed_too), plaintext);
    EXPECT_EQ(gpg_servers(), first_server);
    local.reset();
    EXPECT_EQ(gpg_servers(), "") << "dropping the engine ends its gpg";

    // Without sessions, no gpg stays.
    auto plain = local_gpg_engine(home_->string(), false);
    auto encrypted = plain->encrypt(plaintext, {*fingerprint_}, "");
    ASSERT_TRUE(encrypted.ok()) << encrypted.error().message;
    EXPECT_EQ(decrypt_with_gpg(*encrypted), plaintext);
    EXPECT_EQ(gpg_servers(), "");
}

TEST_F(CryptoGpgEngine, ALargeBinaryMessageRoundTripsThroughTheSession) {
    auto local = local_gpg_engine(home_->string());
    std::string plaintext = "Content-Type: application/octet-stream\r\n\r\n";
    std::uint32_t state = 12345;
    for (int index = 0; index < 8 * 1024 * 1024; ++index) {
        state = state * 1103515245u + 12345u;
        plaintext += static_cast<char>(state >> 24);
    }
    auto encrypted = local->encrypt(plaintext, {*fingerprint_}, "");
    ASSERT_TRUE(encrypted.ok()) << encrypted.error().message;
    EXPECT_FALSE(gpg_servers().empty()) << "the session, not GPGME, encrypted it";
    EXPECT_TRUE(encrypted->ends_with("-----END PGP MESSAGE-----\n"));
    const std::string decrypted = decrypt_with_gpg(*encrypted);
    EXPECT_EQ(decrypted.size(), plaintext.size());
    EXPECT_TRUE(decrypted == plaintext);
}

TEST_F(CryptoGpgEngine, ASessionSeesKeysImportedAndDeletedAfterItStarted) {
    auto local = local_gpg_engine(home_->string());
    ASSERT_TRUE(local->encrypt("warm up", {*fingerprint_}, "").ok());
    const std::string before = gpg_servers();
    ASSERT_FALSE(before.empty());

    // A second key, made in another home and imported into this one while the session runs.
    const std::filesystem::path other = *home_ / "other";
    std::filesystem::create_directories(other);
    std::filesystem::permissions(other, std::filesystem::perms::owner_all);
    const std::string other_gpg = "gpg --batch --homedir " + other.string() + " ";
    ASSERT_EQ(run(other_gpg + "--pinentry-mode loopback --passphrase '' --quick-gen-key 'Other <o@example.org>' "
                              "future-default default 0"),
              0);
    ASSERT_EQ(run(other_gpg + "--with-colons --list-keys | awk -F: '/^fpr/ {print $10; exit}' > " +
                  file("other.fpr").string()),
              0);
    std::string other_fpr = read_file(file("other.fpr"));
    other_fpr.erase(other_fpr.find_last_not_of('\n') + 1);
    ASSERT_EQ(run(other_gpg + "--export o@example.org > " + file("other.pub").string()), 0);
    ASSERT_EQ(run(gpg() + "--import " + file("other.pub").string()), 0);

    auto to_other = local->encrypt("to the new key", {other_fpr}, "");
    ASSERT_TRUE(to_other.ok()) << to_other.error().message;
    write_file(file("other.asc"), *to_other);
    ASSERT_EQ(run(other_gpg + "--decrypt -o " + file("other.out").string() + " " + file("other.asc").string()), 0);
    EXPECT_EQ(read_file(file("other.out")), "to the new key");
    EXPECT_NE(gpg_servers(), before) << "the keyring changed: a new gpg read it";

    // Deleted: no gpg, old or new, encrypts to it any more.
    ASSERT_EQ(run(gpg() + "--yes --delete-keys " + other_fpr), 0);
    auto refused = local->encrypt("to a deleted key", {other_fpr}, "");
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, "pgp.engine");
    EXPECT_TRUE(refused.error().is_temporary());
}

TEST_F(CryptoGpgEngine, AGpgSessionThatDiedIsReplacedWithoutFailingTheRequest) {
    auto local = local_gpg_engine(home_->string());
    ASSERT_TRUE(local->encrypt("first", {*fingerprint_}, "").ok());
    const std::string before = gpg_servers();
    ASSERT_FALSE(before.empty());
    ASSERT_EQ(run("kill -KILL " + before.substr(0, before.find('\n'))), 0);
    auto second = local->encrypt("second", {*fingerprint_}, "");
    ASSERT_TRUE(second.ok()) << second.error().message;
    EXPECT_EQ(decrypt_with_gpg(*second), "second");
    auto third = local->encrypt("third", {*fingerprint_}, "");
    ASSERT_TRUE(third.ok()) << third.error().message;
    EXPECT_EQ(decrypt_with_gpg(*third), "third");
    const std::string after = gpg_servers();
    EXPECT_FALSE(after.empty());
    EXPECT_NE(after, before);
}

TEST_F(CryptoGpgEngine, ErrorsKeepTheirCodeAndClassAcrossTheWorker) {
    auto local = local_gpg_engine(home_->string());
    auto worker = worker_engine();
    for (GpgEngine* engine : {local.get(), worker.get()}) {
        auto garbage = engine->decrypt("-----BEGIN PGP MESSAGE-----\n\nnot really\n-----END PGP MESSAGE-----\n");
        ASSERT_FALSE(garbage.ok());
        EXPECT_EQ(garbage.error().code, "pgp.decrypt");
        EXPECT_FALSE(garbage.error().is_temporary());

        auto unknown = engine->encrypt("hello", {"0123456789ABCDEF0123456789ABCDEF01234567"}, "");
        ASSERT_FALSE(unknown.ok());
        EXPECT_EQ(unknown.error().code, "pgp.engine");
        EXPECT_TRUE(unknown.error().is_temporary());

        auto no_signer = engine->sign_detached("hello", "no-such-signer@example.org");
        ASSERT_FALSE(no_signer.ok());
        EXPECT_EQ(no_signer.error().code, "pgp.signing_key");
    }
    // The worker survived its errors and still works.
    auto after = worker->encrypt("hello", {*fingerprint_}, "");
    EXPECT_TRUE(after.ok()) << after.error().message;
}

TEST_F(CryptoGpgEngine, ManyThreadsShareAtMostTheConfiguredWorkers) {
    auto worker = worker_engine(2);
    std::atomic<int> good{0};
    std::atomic<int> most_workers{0};
    std::vector<std::thread> threads;
    for (int thread = 0; thread < 6; ++thread) {
        threads.emplace_back([&, thread] {
            for (int round = 0; round < 3; ++round) {
                const std::string plaintext = "thread " + std::to_string(thread) + " round " + std::to_string(round);
                auto encrypted = worker->encrypt(plaintext, {*fingerprint_}, "");
                if (!encrypted) continue;
                auto decrypted = worker->decrypt(*encrypted);
                if (decrypted && decrypted->plaintext == plaintext) ++good;
                most_workers = std::max(most_workers.load(), workers_running());
            }
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(good, 18);
    EXPECT_GE(most_workers, 1);
    EXPECT_LE(most_workers, 2);
    worker.reset();  // closing the sockets ends the workers
    EXPECT_EQ(workers_running(), 0);
}

TEST_F(CryptoGpgEngine, AWorkerThatDiedIsReplacedWithoutFailingTheRequest) {
    auto worker = worker_engine(1);
    ASSERT_TRUE(worker->encrypt("first", {*fingerprint_}, "").ok());
    ASSERT_EQ(workers_running(), 1);
    ASSERT_EQ(run("pkill -KILL -f 'postvault-pgp --home " + home_->string() + "$'"), 0);
    for (int wait = 0; wait < 50 && workers_running() > 0; ++wait)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto second = worker->encrypt("second", {*fingerprint_}, "");
    ASSERT_TRUE(second.ok()) << second.error().message;
    auto decrypted = worker->decrypt(*second);
    ASSERT_TRUE(decrypted.ok()) << decrypted.error().message;
    EXPECT_EQ(decrypted->plaintext, "second");
    EXPECT_EQ(workers_running(), 1);
}

TEST_F(CryptoGpgEngine, AWorkerThatHangsIsKilledAtTheTimeout) {
    const std::filesystem::path hanging = file("hanging-worker");
    write_file(hanging, "#!/bin/sh\nexec sleep 30\n");
    std::filesystem::permissions(hanging, std::filesystem::perms::owner_all);
    auto worker = worker_engine(1, std::chrono::seconds(1), hanging.string());
    const auto start = std::chrono::steady_clock::now();
    auto encrypted = worker->encrypt("hello", {*fingerprint_}, "");
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(encrypted.ok());
    EXPECT_EQ(encrypted.error().code, "pgp.engine");
    EXPECT_TRUE(encrypted.error().is_temporary());
    EXPECT_NE(encrypted.error().message.find("timed out"), std::string::npos) << encrypted.error().message;
    EXPECT_LT(took, std::chrono::seconds(5));
}

TEST_F(CryptoGpgEngine, AMissingWorkerProgramIsATemporaryError) {
    auto worker = worker_engine(1, std::chrono::seconds(5), (*home_ / "no-such-program").string());
    auto encrypted = worker->encrypt("hello", {*fingerprint_}, "");
    ASSERT_FALSE(encrypted.ok());
    EXPECT_EQ(encrypted.error().code, "pgp.engine");
    EXPECT_TRUE(encrypted.error().is_temporary());
}

}  // namespace
}  // namespace postvault::crypto
