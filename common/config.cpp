// common/config.cpp — TOML loading and validation for common/config.h.
//
// Each table has a handler map from key to reader; a key without a handler is
// an error, so typos never pass silently. Every problem is collected with its
// line and column, so one run of `postvault config check` shows them all.
#include "common/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include <toml++/toml.h>

#include "common/log.h"
#include "common/mail.h"
#include "common/net.h"

namespace postvault {

Result<Seconds> parse_duration(const std::string& text) {
    if (text.empty()) return Error::permanent("config.duration", "empty duration");
    std::uint64_t number = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error != std::errc() || end == text.data()) {
        return Error::permanent("config.duration",
                                "expected a duration like \"30s\", \"5m\", \"2h\" or \"7d\", got \"" + text + "\"");
    }
    std::string unit(end, text.data() + text.size());
    std::uint64_t factor = 0;
    if (unit.empty() || unit == "s") factor = 1;
    else if (unit == "m") factor = 60;
    else if (unit == "h") factor = 3600;
    else if (unit == "d") factor = 86400;
    else if (unit == "w") factor = 7 * 86400;
    else {
        return Error::permanent("config.duration", "unknown duration unit '" + unit + "' (use s, m, h, d or w)");
    }
    return Seconds(static_cast<Seconds::rep>(number * factor));
}

Result<std::uint64_t> parse_size(const std::string& text) {
    if (text.empty()) return Error::permanent("config.size", "empty size");
    std::uint64_t number = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error != std::errc() || end == text.data()) {
        return Error::permanent("config.size", "expected a size like 1048576, \"10MiB\" or \"10MB\", got \"" + text + "\"");
    }
    std::string unit(end, text.data() + text.size());
    static const std::map<std::string, std::uint64_t> units = {
        {"", 1}, {"B", 1},
        {"KB", 1000ull}, {"MB", 1000ull * 1000}, {"GB", 1000ull * 1000 * 1000}, {"TB", 1000ull * 1000 * 1000 * 1000},
        {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
    };
    auto found = units.find(unit);
    if (found == units.end()) {
        return Error::permanent("config.size", "unknown size unit '" + unit + "' (use B, KB, MB, GB, KiB, MiB, GiB)");
    }
    return number * found->second;
}

namespace {

using Reader = std::function<void(const toml::node&)>;

class ConfigReader {
public:
    ConfigReader(std::string name, std::filesystem::path base_dir)
        : name_(std::move(name)), base_dir_(std::move(base_dir)) {}

    void problem(const toml::source_region& where, const std::string& message) {
        problems_.push_back(config_error_at(name_, where.begin.line, where.begin.column, message));
    }
    const std::vector<std::string>& problems() const { return problems_; }

    // Visits every key of `table`, reporting keys without a reader.
    void read_table(const toml::table& table, const std::string& path,
                    const std::map<std::string, Reader>& readers) {
        for (auto&& [key, node] : table) {
            std::string name(key.str());
            auto reader = readers.find(name);
            if (reader == readers.end()) {
                problem(key.source(), "unknown key '" + qualified(path, name) + "'");
                continue;
            }
            reader->second(node);
        }
    }

    Reader table(const std::string& path, std::map<std::string, Reader> readers) {
        return [this, path, readers = std::move(readers)](const toml::node& node) {
            if (!node.is_table()) {
                problem(node.source(), "'" + path + "' must be a table");
                return;
            }
            read_table(*node.as_table(), path, readers);
        };
    }

    Reader string(const std::string& path, std::string& out) {
        return [this, path, &out](const toml::node& node) {
            if (auto value = node.value<std::string>(); value && node.is_string()) out = *value;
            else problem(node.source(), "'" + path + "' must be a string");
        };
    }

    Reader path_value(const std::string& path, std::string& out) {
        return [this, path, &out](const toml::node& node) {
            if (!node.is_string()) {
                problem(node.source(), "'" + path + "' must be a string (a file path)");
                return;
            }
            out = resolve(*node.value<std::string>());
        };
    }

    Reader string_list(const std::string& path, std::vector<std::string>& out) {
        return [this, path, &out](const toml::node& node) {
            const toml::array* array = node.as_array();
            if (!array) {
                problem(node.source(), "'" + path + "' must be an array of strings");
                return;
            }
            out.clear();
            for (const toml::node& element : *array) {
                if (!element.is_string()) {
                    problem(element.source(), "'" + path + "' must contain only strings");
                    continue;
                }
                out.push_back(*element.value<std::string>());
            }
        };
    }

    // A table of name = "text" (names lower-cased: domains, host names); `shape` names them in
    // the message, e.g. "domain = \"mode\"".
    Reader string_map(const std::string& path, const std::string& shape, std::map<std::string, std::string>& out) {
        return [this, path, shape, &out](const toml::node& node) {
            const toml::table* table = node.as_table();
            if (!table) {
                problem(node.source(), "'" + path + "' must be a table of " + shape);
                return;
            }
            for (auto&& [key, value] : *table) {
                if (!value.is_string()) {
                    problem(value.source(), "'" + path + "' values must be strings");
                    continue;
                }
                out[lowercase(std::string(key.str()))] = *value.value<std::string>();
            }
        };
    }

    Reader path_list(const std::string& path, std::vector<std::string>& out) {
        return [this, path, &out](const toml::node& node) {
            std::vector<std::string> values;
            string_list(path, values)(node);
            out.clear();
            for (const auto& value : values) out.push_back(resolve(value));
        };
    }

    Reader boolean(const std::string& path, bool& out) {
        return [this, path, &out](const toml::node& node) {
            if (node.is_boolean()) out = *node.value<bool>();
            else problem(node.source(), "'" + path + "' must be true or false");
        };
    }

    template <typename Integer>
    Reader integer(const std::string& path, Integer& out, std::int64_t min, std::int64_t max) {
        return [this, path, &out, min, max](const toml::node& node) {
            if (!node.is_integer()) {
                problem(node.source(), "'" + path + "' must be an integer");
                return;
            }
            std::int64_t value = *node.value<std::int64_t>();
            if (value < min || value > max) {
                problem(node.source(), "'" + path + "' must be between " + std::to_string(min) + " and " +
                                           std::to_string(max));
                return;
            }
            out = static_cast<Integer>(value);
        };
    }

    Reader size(const std::string& path, std::uint64_t& out) {
        return [this, path, &out](const toml::node& node) {
            if (node.is_integer() && *node.value<std::int64_t>() >= 0) {
                out = static_cast<std::uint64_t>(*node.value<std::int64_t>());
                return;
            }
            if (node.is_string()) {
                auto parsed = parse_size(*node.value<std::string>());
                if (parsed) out = *parsed;
                else problem(node.source(), "'" + path + "': " + parsed.error().message);
                return;
            }
            problem(node.source(), "'" + path + "' must be a size (bytes, or a string like \"10MiB\")");
        };
    }

    Reader duration(const std::string& path, Seconds& out) {
        return [this, path, &out](const toml::node& node) {
            if (node.is_integer() && *node.value<std::int64_t>() >= 0) {
                out = Seconds(*node.value<std::int64_t>());
                return;
            }
            if (node.is_string()) {
                auto parsed = parse_duration(*node.value<std::string>());
                if (parsed) out = *parsed;
                else problem(node.source(), "'" + path + "': " + parsed.error().message);
                return;
            }
            problem(node.source(), "'" + path + "' must be a duration (seconds, or a string like \"5m\")");
        };
    }

    std::string resolve(const std::string& path) const {
        if (path.empty()) return path;
        std::filesystem::path p(path);
        if (p.is_absolute()) return p.lexically_normal().string();
        return (base_dir_ / p).lexically_normal().string();
    }

private:
    static std::string qualified(const std::string& path, const std::string& key) {
        return path.empty() ? key : path + "." + key;
    }

    std::string name_;
    std::filesystem::path base_dir_;
    std::vector<std::string> problems_;
};

std::string machine_hostname() {
    char buffer[256] = {};
    if (gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') return "localhost";
    return buffer;
}

// Checks that need the values, not the syntax. `where` maps a dotted key to
// the place it was written, for messages with line and column.
void validate(Config& config, ConfigReader& reader, const toml::table& root) {
    auto place = [&root](const std::string& dotted) -> toml::source_region {
        if (auto node = root.at_path(dotted).node()) return node->source();
        return root.source();
    };
    auto check = [&](bool ok, const std::string& dotted, const std::string& message) {
        if (!ok) reader.problem(place(dotted), message);
    };

    check(is_log_level(config.server.log_level), "server.log_level",
          "'server.log_level' must be one of trace, debug, info, warn, error");
    check(config.tls.min_version == "1.2" || config.tls.min_version == "1.3", "tls.min_version",
          "'tls.min_version' must be \"1.2\" or \"1.3\"");
    check(config.tls.cert.empty() == config.tls.key.empty(), config.tls.cert.empty() ? "tls.key" : "tls.cert",
          "'tls.cert' and 'tls.key' must be set together");
    for (const auto* file : {&config.tls.cert, &config.tls.key}) {
        if (!file->empty() && !std::filesystem::exists(*file)) {
            check(false, file == &config.tls.cert ? "tls.cert" : "tls.key", "file not found: " + *file);
        }
    }
    if (!config.tls.key.empty()) {
        struct stat info {};
        if (stat(config.tls.key.c_str(), &info) == 0 && (info.st_mode & 077) != 0) {
            check(false, "tls.key", "private key " + config.tls.key + " must not be readable by group or others (chmod 600)");
        }
    }

    auto listen_index = 0;
    for (const auto& listen : config.smtp.listen) {
        auto endpoint = parse_host_port(listen);
        check(endpoint.ok(), "smtp.listen[" + std::to_string(listen_index) + "]",
              "'smtp.listen': " + (endpoint ? std::string() : endpoint.error().message));
        ++listen_index;
    }
    check(!config.smtp.listen.empty(), "smtp.listen", "'smtp.listen' needs at least one address");
    auto network_index = 0;
    for (const auto& network : config.smtp.trusted_networks) {
        auto parsed = Network::parse(network);
        check(parsed.ok(), "smtp.trusted_networks[" + std::to_string(network_index) + "]",
              "'smtp.trusted_networks': " + (parsed ? std::string() : parsed.error().message));
        ++network_index;
    }
    for (auto& domain : config.smtp.local_domains) domain = lowercase(domain);
    check(config.smtp.max_message_size >= 1024, "smtp.max_message_size", "'smtp.max_message_size' must be at least 1024");
    check(config.smtp.max_buffered_bytes >= 65536, "smtp.max_buffered_bytes",
          "'smtp.max_buffered_bytes' must be at least 64KiB");
    check(config.smtp.max_recipients >= 1, "smtp.max_recipients", "'smtp.max_recipients' must be at least 1");
    check(config.smtp.max_command_line >= 512, "smtp.max_command_line",
          "'smtp.max_command_line' must be at least 512 (RFC 5321 4.5.3.1.4)");
    check(config.smtp.max_data_line >= 1000, "smtp.max_data_line",
          "'smtp.max_data_line' must be at least 1000 (RFC 5321 4.5.3.1.6)");
    check(config.smtp.command_timeout.count() > 0, "smtp.command_timeout", "'smtp.command_timeout' must be positive");
    check(config.smtp.data_timeout.count() > 0, "smtp.data_timeout", "'smtp.data_timeout' must be positive");
    auto user_index = 0;
    for (const auto& user : config.smtp.users) {
        std::string at = "smtp.users[" + std::to_string(user_index) + "]";
        check(!user.name.empty(), at, "each entry of 'smtp.users' needs a 'name'");
        check(user.password_hash.rfind("$argon2id$", 0) == 0, at,
              "'password_hash' must be an Argon2id hash ($argon2id$...); make one with `postvault hash-password`");
        ++user_index;
    }

    auto tls_mode_ok = [](const std::string& mode) { return mode == "may" || mode == "required" || mode == "none"; };
    const auto& archive = config.archive;
    check(archive.mode == "cleartext" || archive.mode == "escrow", "archive.mode",
          "'archive.mode' must be \"cleartext\" or \"escrow\"");
    check(archive.mode != "escrow" || !archive.escrow_keys.empty(), "archive.mode",
          "'archive.mode' = \"escrow\" needs at least one file in 'archive.escrow_keys'");
    for (const auto& key : archive.escrow_keys)
        check(std::filesystem::exists(key), "archive.escrow_keys", "file not found: " + key);
    for (const auto& listen : archive.journal_listen) {
        auto endpoint = parse_host_port(listen, 0);
        check(endpoint.ok() && endpoint->port != 0, "archive.journal_listen",
              "'archive.journal_listen': '" + listen + "' must be \"ip:port\"");
    }
    if (!config.api.listen.empty()) {
        auto endpoint = parse_host_port(config.api.listen, 0);
        check(endpoint.ok() && endpoint->port != 0, "api.listen",
              "'api.listen': '" + config.api.listen + "' must be \"ip:port\"");
        check(!config.api.cert.empty() && !config.api.key.empty(), "api.listen",
              "the API serves HTTPS only: set 'api.cert' and 'api.key', or 'tls.cert' and 'tls.key'");
        check(config.archive.enabled, "api.listen", "the API serves the archive: 'archive.enabled' must be true");
        for (const auto* file : {&config.api.cert, &config.api.key})
            if (!file->empty() && !std::filesystem::exists(*file))
                check(false, file == &config.api.cert ? "api.cert" : "api.key", "file not found: " + *file);
    }
    check(archive.pack_size >= 64 * 1024 && archive.pack_size <= 256ull * 1024 * 1024, "archive.pack_size",
          "'archive.pack_size' must be between 64KiB and 256MiB");
    check(tls_mode_ok(config.delivery.tls), "delivery.tls", "'delivery.tls' must be \"may\", \"required\" or \"none\"");
    for (const auto& source : config.pgp.lookup)
        check(source == "local" || source == "harvested" || source == "wkd" || source == "ldap" || source == "keyserver",
              "pgp.lookup", "'pgp.lookup': unknown source '" + source + "' (local, harvested, wkd, ldap, keyserver)");
    check(config.pgp.key_algorithm == "ed25519" || config.pgp.key_algorithm == "rsa3072", "pgp.key_algorithm",
          "'pgp.key_algorithm' must be \"ed25519\" or \"rsa3072\"");
    for (const auto& [host, target] : config.pgp.resolve)
        check(parse_host_port(target, 443).ok(), "pgp.resolve", "'pgp.resolve': '" + target + "' is not ip:port");
    for (auto& [domain, mode] : config.delivery.tls_policy) {
        check(tls_mode_ok(mode), "delivery.tls_policy", "'delivery.tls_policy' value for '" + domain +
                                                           "' must be \"may\", \"required\" or \"none\"");
    }
    if (!config.delivery.relayhost.empty()) {
        auto hop = parse_host_port(config.delivery.relayhost, 25);
        check(hop.ok(), "delivery.relayhost", "'delivery.relayhost': " + (hop ? std::string() : hop.error().message));
    }
    if (!config.delivery.inbound_relayhost.empty()) {
        auto hop = parse_host_port(config.delivery.inbound_relayhost, 25);
        check(hop.ok(), "delivery.inbound_relayhost",
              "'delivery.inbound_relayhost': " + (hop ? std::string() : hop.error().message));
    }
    // A resolver finds its name servers by address, never by name; libresolv
    // asks at most 3 (MAXNS).
    auto dns_server_index = 0;
    for (const auto& server : config.delivery.dns_servers) {
        const std::string at = "delivery.dns_servers[" + std::to_string(dns_server_index++) + "]";
        auto endpoint = parse_host_port(server, 53);
        if (!endpoint) {
            check(false, at, "'delivery.dns_servers': " + endpoint.error().message);
            continue;
        }
        unsigned char address[sizeof(in6_addr)];
        const bool literal = inet_pton(AF_INET, endpoint->host.c_str(), address) == 1 ||
                             inet_pton(AF_INET6, endpoint->host.c_str(), address) == 1;
        check(literal, at, "'delivery.dns_servers': '" + server + "' must be an IP address (\"ip\", \"ip:port\" or "
                           "\"[v6]:port\"), not a host name");
    }
    check(config.delivery.dns_servers.size() <= 3, "delivery.dns_servers",
          "'delivery.dns_servers' takes at most 3 servers");
    if (!config.delivery.ca_file.empty()) {
        check(std::filesystem::exists(config.delivery.ca_file), "delivery.ca_file",
              "file not found: " + config.delivery.ca_file);
    }
    check(config.delivery.retry_min.count() > 0 && config.delivery.retry_min <= config.delivery.retry_max,
          "delivery.retry_min", "'delivery.retry_min' must be positive and not above 'delivery.retry_max'");
    check(config.delivery.max_connections_per_destination >= 1 &&
              config.delivery.max_connections_per_destination <= config.delivery.max_connections,
          "delivery.max_connections_per_destination",
          "'delivery.max_connections_per_destination' must be between 1 and 'delivery.max_connections'");
}

}  // namespace

std::string config_error_at(const std::string& name, std::uint64_t line, std::uint64_t column, std::string_view message) {
    return name + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + std::string(message);
}

Result<Config> parse_config(const std::string& text, const std::string& name) {
    std::filesystem::path base_dir = std::filesystem::absolute(name).parent_path();
    toml::table root;
    try {
        root = toml::parse(text, name);
    } catch (const toml::parse_error& error) {
        return Error::permanent("config.syntax", config_error_at(name, error.source().begin.line,
                                                                 error.source().begin.column, error.description()));
    }

    Config config;
    config.path = std::filesystem::absolute(name).lexically_normal().string();
    config.server.data_dir = "";
    ConfigReader reader(name, base_dir);
    auto& s = config.server;
    auto& t = config.tls;
    auto& m = config.smtp;
    auto& d = config.delivery;
    auto& a = config.archive;
    auto& q = config.search;
    auto& w = config.api;

    Reader users = [&](const toml::node& node) {
        const toml::array* array = node.as_array();
        if (!array) {
            reader.problem(node.source(), "'smtp.users' must be an array of tables ([[smtp.users]])");
            return;
        }
        for (const toml::node& element : *array) {
            SmtpUser user;
            reader.table("smtp.users", {{"name", reader.string("smtp.users.name", user.name)},
                                        {"password_hash", reader.string("smtp.users.password_hash",
                                                                        user.password_hash)}})(element);
            m.users.push_back(user);
        }
    };

    std::map<std::string, Reader> top = {
        {"server", reader.table("server", {
            {"hostname", reader.string("server.hostname", s.hostname)},
            {"data_dir", reader.path_value("server.data_dir", s.data_dir)},
            {"log_level", reader.string("server.log_level", s.log_level)},
            {"control_socket", reader.path_value("server.control_socket", s.control_socket)},
            {"io_threads", reader.integer("server.io_threads", s.io_threads, 0, 64)},
        })},
        {"tls", reader.table("tls", {
            {"cert", reader.path_value("tls.cert", t.cert)},
            {"key", reader.path_value("tls.key", t.key)},
            {"min_version", reader.string("tls.min_version", t.min_version)},
        })},
        {"smtp", reader.table("smtp", {
            {"listen", reader.string_list("smtp.listen", m.listen)},
            {"trusted_networks", reader.string_list("smtp.trusted_networks", m.trusted_networks)},
            {"local_domains", reader.string_list("smtp.local_domains", m.local_domains)},
            {"max_message_size", reader.size("smtp.max_message_size", m.max_message_size)},
            {"max_recipients", reader.integer("smtp.max_recipients", m.max_recipients, 1, 100000)},
            {"max_header_size", reader.size("smtp.max_header_size", m.max_header_size)},
            {"max_command_line", reader.integer("smtp.max_command_line", m.max_command_line, 1, 1 << 20)},
            {"max_data_line", reader.integer("smtp.max_data_line", m.max_data_line, 1, 1 << 30)},
            {"command_timeout", reader.duration("smtp.command_timeout", m.command_timeout)},
            {"data_timeout", reader.duration("smtp.data_timeout", m.data_timeout)},
            {"max_connections", reader.integer("smtp.max_connections", m.max_connections, 1, 100000)},
            {"max_connections_per_ip", reader.integer("smtp.max_connections_per_ip", m.max_connections_per_ip, 1, 100000)},
            {"max_errors", reader.integer("smtp.max_errors", m.max_errors, 1, 10000)},
            {"max_hops", reader.integer("smtp.max_hops", m.max_hops, 1, 1000)},
            {"min_free_disk", reader.size("smtp.min_free_disk", m.min_free_disk)},
            {"max_buffered_bytes", reader.size("smtp.max_buffered_bytes", m.max_buffered_bytes)},
            {"users", users},
        })},
        {"delivery", reader.table("delivery", {
            {"relayhost", reader.string("delivery.relayhost", d.relayhost)},
            {"inbound_relayhost", reader.string("delivery.inbound_relayhost", d.inbound_relayhost)},
            {"tls", reader.string("delivery.tls", d.tls)},
            {"tls_policy", reader.string_map("delivery.tls_policy", "domain = \"mode\"", d.tls_policy)},
            {"ca_file", reader.path_value("delivery.ca_file", d.ca_file)},
            {"helo_name", reader.string("delivery.helo_name", d.helo_name)},
            {"max_queue_time", reader.duration("delivery.max_queue_time", d.max_queue_time)},
            {"retry_min", reader.duration("delivery.retry_min", d.retry_min)},
            {"retry_max", reader.duration("delivery.retry_max", d.retry_max)},
            {"connect_timeout", reader.duration("delivery.connect_timeout", d.connect_timeout)},
            {"command_timeout", reader.duration("delivery.command_timeout", d.command_timeout)},
            {"data_timeout", reader.duration("delivery.data_timeout", d.data_timeout)},
            {"idle_timeout", reader.duration("delivery.idle_timeout", d.idle_timeout)},
            {"max_connections", reader.integer("delivery.max_connections", d.max_connections, 1, 10000)},
            {"max_connections_per_destination", reader.integer("delivery.max_connections_per_destination",
                                                                d.max_connections_per_destination, 1, 10000)},
            {"mx_port", reader.integer("delivery.mx_port", d.mx_port, 1, 65535)},
            {"dns_servers", reader.string_list("delivery.dns_servers", d.dns_servers)},
        })},
        {"archive", reader.table("archive", {
            {"enabled", reader.boolean("archive.enabled", a.enabled)},
            {"mode", reader.string("archive.mode", a.mode)},
            {"directory", reader.path_value("archive.directory", a.directory)},
            {"key_file", reader.path_value("archive.key_file", a.key_file)},
            {"signing_key", reader.path_value("archive.signing_key", a.signing_key)},
            {"escrow_keys", reader.path_list("archive.escrow_keys", a.escrow_keys)},
            {"checkpoint_every", reader.integer("archive.checkpoint_every", a.checkpoint_every, 1, 1000000000)},
            {"checkpoint_interval", reader.duration("archive.checkpoint_interval", a.checkpoint_interval)},
            {"leaf_threshold", reader.size("archive.leaf_threshold", a.leaf_threshold)},
            {"pack_size", reader.size("archive.pack_size", a.pack_size)},
            {"repack_interval", reader.duration("archive.repack_interval", a.repack_interval)},
            {"journal_listen", reader.string_list("archive.journal_listen", a.journal_listen)},
        })},
        {"search", reader.table("search", {
            {"enabled", reader.boolean("search.enabled", q.enabled)},
            {"directory", reader.path_value("search.directory", q.directory)},
            {"batch_size", reader.integer("search.batch_size", q.batch_size, 1, 1000000)},
            {"commit_interval", reader.duration("search.commit_interval", q.commit_interval)},
            {"language", reader.string("search.language", q.language)},
        })},
        // [policy] is read and checked by gateway/policy (policy::load), which compiles its rules.
        {"policy", [](const toml::node&) {}},
        {"pgp", reader.table("pgp", {
            {"directory", reader.path_value("pgp.directory", config.pgp.directory)},
            {"lookup", reader.string_list("pgp.lookup", config.pgp.lookup)},
            {"keyservers", reader.string_list("pgp.keyservers", config.pgp.keyservers)},
            {"signing_key", reader.string("pgp.signing_key", config.pgp.signing_key)},
            {"additional_decryption_keys",
             reader.string_list("pgp.additional_decryption_keys", config.pgp.additional_decryption_keys)},
            {"key_algorithm", reader.string("pgp.key_algorithm", config.pgp.key_algorithm)},
            {"protected_headers", reader.boolean("pgp.protected_headers", config.pgp.protected_headers)},
            {"cache_ttl", reader.duration("pgp.cache_ttl", config.pgp.cache_ttl)},
            {"failure_ttl", reader.duration("pgp.failure_ttl", config.pgp.failure_ttl)},
            {"fetch_timeout", reader.duration("pgp.fetch_timeout", config.pgp.fetch_timeout)},
            {"ca_file", reader.path_value("pgp.ca_file", config.pgp.ca_file)},
            {"resolve", reader.string_map("pgp.resolve", "host = \"ip:port\"", config.pgp.resolve)},
        })},
        {"api", reader.table("api", {
            {"listen", reader.string("api.listen", w.listen)},
            {"cert", reader.path_value("api.cert", w.cert)},
            {"key", reader.path_value("api.key", w.key)},
            {"tokens_file", reader.path_value("api.tokens_file", w.tokens_file)},
            {"exports_directory", reader.path_value("api.exports_directory", w.exports_directory)},
            {"max_connections", reader.integer("api.max_connections", w.max_connections, 1, 100000)},
            {"read_timeout", reader.duration("api.read_timeout", w.read_timeout)},
            {"write_timeout", reader.duration("api.write_timeout", w.write_timeout)},
            {"idle_timeout", reader.duration("api.idle_timeout", w.idle_timeout)},
            {"max_header_size", reader.size("api.max_header_size", w.max_header_size)},
            {"max_body_size", reader.size("api.max_body_size", w.max_body_size)},
            {"max_limit", reader.integer("api.max_limit", w.max_limit, 1, 100000)},
            {"max_export_messages", reader.integer("api.max_export_messages", w.max_export_messages, 1, 1000000000)},
        })},
    };
    reader.read_table(root, "", top);

    if (s.data_dir.empty()) s.data_dir = reader.resolve("var");
    if (s.hostname.empty()) s.hostname = machine_hostname();
    if (s.control_socket.empty()) s.control_socket = (std::filesystem::path(s.data_dir) / "control.sock").string();
    if (d.helo_name.empty()) d.helo_name = s.hostname;
    const std::filesystem::path data(s.data_dir);
    if (a.directory.empty()) a.directory = (data / "archive").string();
    if (a.key_file.empty()) a.key_file = (data / "keys" / "archive.kek").string();
    if (a.signing_key.empty()) a.signing_key = (data / "keys" / "archive-signing.pem").string();
    if (q.directory.empty()) q.directory = (data / "index").string();
    if (w.cert.empty()) w.cert = t.cert;
    if (w.key.empty()) w.key = t.key;
    if (w.tokens_file.empty()) w.tokens_file = (data / "api-tokens.json").string();
    if (w.exports_directory.empty()) w.exports_directory = (data / "exports").string();
    if (config.pgp.directory.empty()) config.pgp.directory = (data / "pgp").string();

    validate(config, reader, root);

    if (!reader.problems().empty()) {
        std::string all;
        for (const auto& line : reader.problems()) {
            if (!all.empty()) all += "\n";
            all += line;
        }
        return Error::permanent("config.invalid", all);
    }
    return config;
}

Result<Config> load_config(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return Error::permanent("config.open", path + ": cannot open configuration file");
    std::stringstream text;
    text << file.rdbuf();
    return parse_config(text.str(), path);
}

}  // namespace postvault
