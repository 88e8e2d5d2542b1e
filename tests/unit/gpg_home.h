// tests/unit/gpg_home.h — a throw-away GnuPG home for tests that check against the real gpg:
// one key "Test <t@example.org>" (Ed25519 for signing, a Cv25519 subkey for encryption), made
// with the gpg command line. Tests skip when gpg is not installed or the key cannot be made.
//
//   class MyTest : public GpgHomeTest {};   // the home and key are shared by the suite
//   gpg() + "--verify ..."                  // the gpg command line on the home, batch mode
#pragma once

#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>

namespace postvault::testing_gpg {

inline std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs a shell command quietly; its exit status (-1 when it did not exit).
inline int run(const std::string& command) {
    const int status = std::system(("{ " + command + "; } >/dev/null 2>&1").c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class GpgHomeTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (run("command -v gpg && command -v gpgconf") != 0) return;
        char pattern[] = "/tmp/pv-XXXXXX";  // short: gpg-agent's socket path must fit
        if (::mkdtemp(pattern) == nullptr) return;
        home_ = new std::filesystem::path(pattern);
        if (run(gpg() + "--pinentry-mode loopback --passphrase '' --quick-gen-key 'Test <t@example.org>' ed25519 sign") != 0)
            return;
        if (run(gpg() + "--with-colons --list-keys > " + (*home_ / "keys").string()) != 0) return;
        std::istringstream lines(read_file(*home_ / "keys"));
        std::string fingerprint;
        for (std::string line; std::getline(lines, line);) {
            if (line.rfind("fpr:", 0) == 0) {
                fingerprint = line.substr(0, line.find_last_of(':'));
                fingerprint = fingerprint.substr(fingerprint.find_last_of(':') + 1);
                break;
            }
        }
        if (fingerprint.empty()) return;
        if (run(gpg() + "--pinentry-mode loopback --passphrase '' --quick-add-key " + fingerprint + " cv25519 encr") != 0)
            return;
        fingerprint_ = new std::string(fingerprint);
    }

    static void TearDownTestSuite() {
        if (home_ != nullptr) {
            run("gpgconf --homedir " + home_->string() + " --kill all");
            std::error_code ignored;
            std::filesystem::remove_all(*home_, ignored);
        }
        delete home_;
        delete fingerprint_;
        home_ = nullptr;
        fingerprint_ = nullptr;
    }

    void SetUp() override {
        if (fingerprint_ == nullptr) GTEST_SKIP() << "gpg is not installed or could not create a key";
    }

    static std::string gpg() { return "gpg --homedir " + home_->string() + " --batch --yes "; }
    static std::filesystem::path file(const char* name) { return *home_ / name; }

    static inline std::filesystem::path* home_ = nullptr;
    static inline std::string* fingerprint_ = nullptr;
};

}  // namespace postvault::testing_gpg
