// common/config.h — the typed configuration, loaded from one TOML file.
//
// One struct per module, each with documented defaults (docs/configuration.md
// is the reference). load_config() parses and validates the whole file:
// syntax errors, unknown keys, wrong types and bad values are reported with the
// file name, line and column ("postvault.toml:12:3: unknown key 'smtp.lisen'").
// Relative paths are resolved against the directory that holds the file.
// A Config is an immutable value: a reload builds a new one and swaps it in.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"

namespace postvault {

using Seconds = std::chrono::seconds;

struct ServerConfig {
    std::string hostname;              // default: the machine's host name
    std::string data_dir = "var";      // queue, keys, sockets live here
    std::string log_level = "info";    // trace|debug|info|warn|error
    std::string control_socket;        // default: <data_dir>/control.sock
    int io_threads = 0;                // 0: one per core
};

struct TlsConfig {
    std::string cert;                  // PEM chain; empty disables STARTTLS
    std::string key;                   // PEM private key, must be mode 0600
    std::string min_version = "1.2";   // "1.2" or "1.3"
};

struct SmtpUser {
    std::string name;
    std::string password_hash;         // Argon2id encoded hash ($argon2id$...)
};

struct SmtpConfig {
    std::vector<std::string> listen = {"127.0.0.1:2525"};
    std::vector<std::string> trusted_networks = {"127.0.0.0/8", "::1/128"};
    std::vector<std::string> local_domains;
    std::uint64_t max_message_size = 50ull * 1024 * 1024;
    std::size_t max_recipients = 1000;
    std::uint64_t max_header_size = 1024 * 1024;
    std::size_t max_command_line = 2048;
    std::size_t max_data_line = 65536;
    Seconds command_timeout{300};
    Seconds data_timeout{600};
    std::size_t max_connections = 500;
    std::size_t max_connections_per_ip = 100;
    std::size_t max_errors = 20;
    std::size_t max_hops = 50;         // Received: headers allowed before a message counts as looping
    std::uint64_t min_free_disk = 256ull * 1024 * 1024;
    std::uint64_t max_buffered_bytes = 2ull * 1024 * 1024 * 1024;  // message bytes held by all sessions
    std::vector<SmtpUser> users;
};

struct DeliveryConfig {
    std::string relayhost;             // "host:port" or "[host]:port"; empty: MX lookup
    std::string inbound_relayhost;     // next hop for local_domains; empty: as outbound
    std::string tls = "may";           // may | required | none
    std::map<std::string, std::string> tls_policy;  // domain -> may|required|none
    std::string ca_file;               // extra trust anchors for verified TLS
    std::string helo_name;             // default: server.hostname
    Seconds max_queue_time{5 * 86400};
    Seconds retry_min{300};
    Seconds retry_max{4000};
    Seconds connect_timeout{30};
    Seconds command_timeout{300};
    Seconds data_timeout{600};
    Seconds idle_timeout{10};          // how long an idle connection is kept for reuse
    std::size_t max_connections = 200;
    std::size_t max_connections_per_destination = 20;
    int mx_port = 25;
    // Name servers for MX lookups and the addresses of MX hosts, instead of
    // those in /etc/resolv.conf (split DNS, a local validating resolver):
    // "ip", "ip:port" or "[v6]:port" (port 53 by default), IP literals only,
    // at most 3. Empty: the system resolver. Relay hosts do not use them.
    std::vector<std::string> dns_servers;
};

struct ArchiveConfig {
    bool enabled = true;               // journal every accepted message
    std::string mode = "cleartext";    // cleartext | escrow
    std::string directory;             // RocksDB store; default <data_dir>/archive
    std::string key_file;              // key-encryption keys (0600); default <data_dir>/keys/archive.kek
    std::string signing_key;           // Ed25519 checkpoint key (0600); default <data_dir>/keys/archive-signing.pem
    std::vector<std::string> escrow_keys;  // OpenPGP public key files (escrow mode)
    std::uint64_t checkpoint_every = 1000;  // a signed checkpoint after this many chain entries...
    Seconds checkpoint_interval{60};   // ...or this long after the first unsigned entry
    std::uint64_t leaf_threshold = 16 * 1024;   // MIME leaves this large are stored once by content hash
    std::uint64_t pack_size = 8ull * 1024 * 1024;  // messages are repacked into blobs of about this size
    Seconds repack_interval{3600};     // how often the server repacks; 0: never (only `archive compact`)
    std::vector<std::string> journal_listen;   // SMTP listeners that only archive ("ip:port")
};

struct SearchConfig {
    bool enabled = true;               // index every archived message
    std::string directory;             // Xapian index; default <data_dir>/index
    std::uint64_t batch_size = 2000;   // messages per Xapian commit (at most)
    Seconds commit_interval{1};        // and at most this long between a message's archiving and its commit
    std::string language = "english"; // Snowball stemmer for free text
};

struct ApiConfig {
    std::string listen;                // "ip:port" for the HTTPS audit API; empty: no API
    std::string cert;                  // PEM chain; default: [tls] cert
    std::string key;                   // PEM private key (0600); default: [tls] key
    std::string tokens_file;           // hashed bearer tokens (0600); default <data_dir>/api-tokens.json
    std::string exports_directory;     // finished exports; default <data_dir>/exports
    std::size_t max_connections = 256; // concurrent connections; more wait in the kernel's backlog
    Seconds read_timeout{30};          // a request's header and body must arrive within this
    Seconds write_timeout{120};        // a response's bytes must be taken within this (per write)
    Seconds idle_timeout{60};          // keep-alive: an idle connection closes after this
    std::uint64_t max_header_size = 16 * 1024;
    std::uint64_t max_body_size = 1024 * 1024;  // JSON request bodies
    std::size_t max_limit = 1000;      // most results per search page
    std::uint64_t max_export_messages = 1000000;  // larger exports are refused (split them)
};

struct PgpConfig {
    std::string directory;             // the gateway's GnuPG home and key records; default <data_dir>/pgp
    // Where a recipient's key is looked for, in order: local (imported or managed), harvested
    // (from inbound mail), wkd, ldap (keys.<domain>), keyserver. "ldap" is not in the default: it
    // sends the address in clear text to port 389 of every recipient domain's keys.<domain>.
    std::vector<std::string> lookup = {"local", "harvested", "wkd", "keyserver"};
    std::vector<std::string> keyservers;             // "hkps://keys.openpgp.org", "hkp://host:port"
    std::string signing_key;                         // fingerprint or address of the organization's key
    std::vector<std::string> additional_decryption_keys;  // fingerprints every message is also encrypted to
    std::string key_algorithm = "ed25519";           // managed keys: ed25519 (with cv25519) | rsa3072
    bool protected_headers = false;                  // real Subject inside, "..." outside
    Seconds cache_ttl{86400};                        // a found key is used this long before asking again
    Seconds failure_ttl{3600};                       // "no key" is remembered this long
    Seconds fetch_timeout{10};                       // one WKD or keyserver request, one LDAP lookup
    std::string ca_file;                             // CAs for WKD/HKPS; default: the system's
    std::map<std::string, std::string> resolve;      // host -> "ip:port" (split DNS, tests), also keys.<domain>
};

struct Config {
    std::string path;                  // the file it was loaded from
    ServerConfig server;
    TlsConfig tls;
    SmtpConfig smtp;
    DeliveryConfig delivery;
    ArchiveConfig archive;
    SearchConfig search;
    ApiConfig api;
    PgpConfig pgp;
};

// Parses and validates FILE. On failure the Error message holds every problem
// found, one per line, each prefixed with "FILE:LINE:COLUMN: ".
Result<Config> load_config(const std::string& path);

// Same, from text (for tests); `name` is used in messages and to resolve paths.
Result<Config> parse_config(const std::string& text, const std::string& name);

// "name:line:column: message": how every configuration error names its place (the policy's too).
std::string config_error_at(const std::string& name, std::uint64_t line, std::uint64_t column, std::string_view message);

// "30s", "5m", "2h", "7d" or a bare number of seconds.
Result<Seconds> parse_duration(const std::string& text);
// "1048576", "10KiB", "50MiB", "1GiB", "10KB", "50MB", "1GB".
Result<std::uint64_t> parse_size(const std::string& text);

}  // namespace postvault
