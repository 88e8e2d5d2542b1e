// app/init.cpp — `postvault init`: a ready-to-run data directory.
//
// Creates DIR (mode 0700) with postvault.toml, a self-signed TLS certificate
// (ECDSA P-256, SAN: the host name, localhost, 127.0.0.1, ::1) and its key
// (mode 0600). An existing configuration is kept unless --force is given, so
// running init twice is harmless.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <functional>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "app/commands.h"
#include "common/config.h"
#include "common/openssl.h"

namespace postvault::app {

namespace {

std::string machine_hostname() {
    char buffer[256] = {};
    if (gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') return "localhost";
    return buffer;
}

bool add_extension(X509* certificate, int nid, const std::string& value) {
    X509V3_CTX context;
    X509V3_set_ctx_nodb(&context);
    X509V3_set_ctx(&context, certificate, certificate, nullptr, nullptr, 0);
    openssl::Extension extension(X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str()));
    return extension && X509_add_ext(certificate, extension.get(), -1) == 1;
}

// Writes `text` to a new file with `mode` set from creation on (no window in
// which a key is world-readable).
bool write_private_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) return false;
    fchmod(fd, mode);
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ok = fsync(fd) == 0 && ok;
    ::close(fd);
    return ok;
}

std::string pem_of(const std::function<int(BIO*)>& write) {
    openssl::Bio bio(BIO_new(BIO_s_mem()));
    if (!bio || write(bio.get()) != 1) return {};
    BUF_MEM* memory = nullptr;
    BIO_get_mem_ptr(bio.get(), &memory);
    return std::string(memory->data, memory->length);
}

bool make_self_signed(const std::string& hostname, const std::filesystem::path& cert_path,
                      const std::filesystem::path& key_path, std::string& problem) {
    openssl::PrivateKey key(EVP_EC_gen("P-256"));
    openssl::Certificate certificate(X509_new());
    if (!key || !certificate) {
        problem = openssl::error_text();
        return false;
    }
    X509_set_version(certificate.get(), 2);
    unsigned char serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7F;
    BIGNUM* serial_number = BN_bin2bn(serial, sizeof serial, nullptr);
    BN_to_ASN1_INTEGER(serial_number, X509_get_serialNumber(certificate.get()));
    BN_free(serial_number);
    X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 825L * 86400);
    X509_set_pubkey(certificate.get(), key.get());
    X509_NAME* name = X509_get_subject_name(certificate.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("postvault"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(hostname.c_str()), -1,
                               -1, 0);
    X509_set_issuer_name(certificate.get(), name);
    std::string alt_names = "DNS:" + hostname + (hostname == "localhost" ? "" : ",DNS:localhost") +
                            ",IP:127.0.0.1,IP:::1";
    if (!add_extension(certificate.get(), NID_subject_alt_name, alt_names) ||
        !add_extension(certificate.get(), NID_basic_constraints, "critical,CA:TRUE") ||
        !add_extension(certificate.get(), NID_key_usage, "critical,digitalSignature,keyCertSign") ||
        !add_extension(certificate.get(), NID_ext_key_usage, "serverAuth,clientAuth") ||
        X509_sign(certificate.get(), key.get(), EVP_sha256()) == 0) {
        problem = openssl::error_text();
        return false;
    }
    std::string key_pem = pem_of([&](BIO* bio) {
        return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    });
    std::string cert_pem = pem_of([&](BIO* bio) { return PEM_write_bio_X509(bio, certificate.get()); });
    if (key_pem.empty() || cert_pem.empty()) {
        problem = openssl::error_text();
        return false;
    }
    if (!write_private_file(key_path, key_pem, 0600) || !write_private_file(cert_path, cert_pem, 0644)) {
        problem = "cannot write " + key_path.string() + " or " + cert_path.string();
        return false;
    }
    return true;
}

std::string default_config(const std::string& hostname) {
    return R"(# postvault configuration — every key is described in docs/configuration.md.
# Relative paths are relative to this file's directory.

[server]
hostname = ")" + hostname + R"("
data_dir = "."
log_level = "info"

[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
min_version = "1.2"

[smtp]
listen = ["127.0.0.1:2525"]
# Relaying is allowed only from these networks or after AUTH (never an open relay).
trusted_networks = ["127.0.0.0/8", "::1/128"]
# Mail for these domains is accepted from anyone (the inbound path).
local_domains = []
max_message_size = "50MiB"
max_recipients = 1000
# Users allowed to submit after STARTTLS + AUTH; hashes from `postvault hash-password`.
# [[smtp.users]]
# name = "alice"
# password_hash = "$argon2id$..."

[delivery]
# Empty: deliver by MX lookup. "host:port" (or "[host]:port") sends everything there.
relayhost = ""
inbound_relayhost = ""
tls = "may"                 # may | required | none
max_queue_time = "5d"
retry_min = "5m"
retry_max = "1h"

[archive]
# Every accepted message is journaled here (docs/archive.md). The mode is fixed when the
# archive is created: "cleartext" (AES-256-GCM under keys/archive.kek) or "escrow"
# (encrypted to escrow_keys = ["officer.asc", ...], which only their holders can read).
mode = "cleartext"
checkpoint_interval = "60s"
# journal_listen = ["127.0.0.1:2526"]   # an SMTP listener that only archives (journal copies)

[api]
# The HTTPS audit API (docs/api.md, docs/openapi.yaml), with the [tls] certificate. Tokens:
#   postvault token create --config postvault.toml --name NAME --role admin|auditor|legal|reviewer
listen = "127.0.0.1:8443"
)";
}

}  // namespace

int run_init(const InitOptions& options) {
    namespace fs = std::filesystem;
    fs::path directory = fs::absolute(options.directory).lexically_normal();
    fs::path config_path = directory / "postvault.toml";
    std::error_code error;
    fs::create_directories(directory / "tls", error);
    if (error) {
        std::cerr << "postvault init: cannot create " << directory.string() << ": " << error.message() << "\n";
        return 1;
    }
    fs::permissions(directory, fs::perms::owner_all, error);
    if (fs::exists(config_path) && !options.force) {
        std::cout << "postvault init: " << config_path.string() << " exists; keeping it (use --force to replace)\n";
        return 0;
    }
    std::string hostname = options.hostname.empty() ? machine_hostname() : options.hostname;
    std::string problem;
    if (!make_self_signed(hostname, directory / "tls" / "cert.pem", directory / "tls" / "key.pem", problem)) {
        std::cerr << "postvault init: cannot create the TLS certificate: " << problem << "\n";
        return 1;
    }
    if (!write_private_file(config_path, default_config(hostname), 0600)) {
        std::cerr << "postvault init: cannot write " << config_path.string() << "\n";
        return 1;
    }
    auto check = load_config(config_path.string());
    if (!check) {
        std::cerr << "postvault init: the generated configuration is invalid:\n" << check.error().message << "\n";
        return 1;
    }
    std::cout << "postvault init: created " << config_path.string() << "\n"
              << "  TLS certificate " << (directory / "tls" / "cert.pem").string() << " (self-signed for "
              << hostname << ")\n"
              << "  TLS key         " << (directory / "tls" / "key.pem").string() << " (mode 0600)\n";
    return 0;
}

}  // namespace postvault::app
