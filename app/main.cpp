// app/main.cpp — postvault-core, the program behind every `postvault` command (the
// `postvault` launcher, app/launcher.cpp, runs it; `search --count` goes to the smaller
// postvault-search). Its command line (CLI11):
//
//   postvault init [--dir DIR] [--hostname NAME] [--force]
//   postvault serve --config FILE
//   postvault config check --config FILE
//   postvault queue list|show ID|retry ID|delete ID|flush|quarantine --config FILE [--json]
//   postvault reload --config FILE
//   postvault hash-password            (reads the password from standard input)
//   postvault archive import --format maildir|mbox|eml|pst|exchange-journal PATH
//   postvault archive list [--limit N] | show ID | get ID | verify | stats | prove ID
//   postvault archive compact | rotate-key | backup DIR | restore DIR
//   postvault search [--count|--json] [--limit N] [--sort date|relevance] QUERY | reindex | report FILE
//   postvault policy explain --from ADDR --to ADDR [--to ADDR...] [--json] MESSAGE.eml
//   postvault policy scan --format FORMAT [--from ADDR] [--to ADDR...] [--json] PATH
//   postvault token create --name NAME --role ROLE [--expires DATE] [--custodian A] [--domain D] | list | revoke NAME
//
// Queue commands and reload talk to the running server over its control socket;
// archive commands see app/archive_command.cpp.
#include <malloc.h>
#include <unistd.h>

#include <ctime>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/search_cli.h"
#include "audit-api/routes.h"
#include "gateway/policy/policy.h"
#include "common/config.h"
#include "gateway/control/control.h"
#include "gateway/smtp/auth.h"

namespace {

using namespace postvault;

std::string format_time(std::int64_t unix_time) {
    if (unix_time <= 0) return "-";
    std::time_t t = unix_time;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%SZ", &tm);
    return buffer;
}

void print_message(const nlohmann::json& message, bool detailed) {
    std::cout << message["id"].get<std::string>() << "  " << message["size"].get<std::uint64_t>() << " bytes  "
              << format_time(message["received"].get<std::int64_t>()) << "  from <"
              << message["from"].get<std::string>() << ">\n";
    for (const auto& recipient : message["recipients"]) {
        std::cout << "    " << recipient["state"].get<std::string>() << "  <"
                  << recipient["address"].get<std::string>() << ">";
        if (recipient["attempts"].get<int>() > 0) std::cout << "  attempts=" << recipient["attempts"];
        if (recipient["state"] == "deferred") {
            std::cout << "  next=" << format_time(recipient["next_attempt"].get<std::int64_t>());
        }
        std::cout << "\n";
        if (detailed || recipient["state"] != "pending") {
            if (!recipient["last_reply"].get<std::string>().empty()) {
                std::cout << "        reply: " << recipient["last_reply"].get<std::string>() << "\n";
            }
        }
        if (detailed && !recipient["remote_host"].get<std::string>().empty()) {
            std::cout << "        relay: " << recipient["remote_host"].get<std::string>();
            if (!recipient["tls_version"].get<std::string>().empty()) {
                std::cout << " tls=" << recipient["tls_version"].get<std::string>() << " "
                          << recipient["tls_cipher"].get<std::string>();
            }
            std::cout << "\n";
        }
        if (detailed && recipient.contains("policy") && !recipient["policy"].is_null()) {
            const auto& p = recipient["policy"];
            std::cout << "        policy: rule " << p["rule"].get<std::string>();
            if (!p["encrypt"].empty()) {
                std::cout << " encrypt=";
                for (const auto& m : p["encrypt"]) std::cout << m.get<std::string>() << ",";
                std::cout << p["fallback"].get<std::string>();
            }
            for (const char* flag : {"sign", "require_tls", "verified_key", "quarantine", "notify"})
                if (p[flag].get<bool>()) std::cout << " " << flag;
            std::cout << "\n";
        }
    }
    if (detailed) {
        const auto& client = message["client"];
        std::cout << "    client: " << client["ip"].get<std::string>() << " helo=" << client["helo"].get<std::string>();
        if (!client["tls_version"].get<std::string>().empty()) {
            std::cout << " tls=" << client["tls_version"].get<std::string>();
        }
        if (!client["auth_user"].get<std::string>().empty()) {
            std::cout << " auth=" << client["auth_user"].get<std::string>();
        }
        std::cout << "\n";
    }
}

// Sends a control request to the server named by `config_path`; prints errors.
int control_command(const std::string& config_path, const nlohmann::json& request, bool json_output,
                    const std::function<void(const nlohmann::json&)>& print) {
    auto config = load_config(config_path);
    if (!config) {
        std::cerr << config.error().message << "\n";
        return 1;
    }
    auto response = control::send_request(config->server.control_socket, request);
    if (!response) {
        std::cerr << "postvault: " << response.error().message << "\n";
        return 1;
    }
    if (json_output) {
        std::cout << response->dump(2) << "\n";
    }
    if (!(*response).value("ok", false)) {
        if (!json_output) {
            std::cerr << "postvault: " << (*response)["error"].value("message", "request failed") << "\n";
        }
        return 1;
    }
    if (!json_output && print) print(*response);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // Grow the heap 64 MiB at a time and keep that much when memory is freed: the archive
    // allocates and frees message-sized buffers at thousands per second, and fresh pages cost
    // a page fault each (measured: about 6% faster ingest of large messages).
    mallopt(M_TOP_PAD, 64 << 20);
    CLI::App app{"postvault — encrypting mail relay and compliance archive"};
    app.require_subcommand(1);
    std::string config_path = "var/postvault.toml";
    bool json_output = false;

    app::InitOptions init_options;
    auto* init = app.add_subcommand("init", "Create a data directory with a configuration, TLS certificate and keys");
    init->add_option("--dir", init_options.directory, "Data directory to create")->capture_default_str();
    init->add_option("--hostname", init_options.hostname, "Host name for the certificate and SMTP banner");
    init->add_flag("--force", init_options.force, "Replace an existing configuration");

    auto* serve = app.add_subcommand("serve", "Run the relay");
    serve->add_option("--config", config_path, "Configuration file")->capture_default_str();

    auto* config = app.add_subcommand("config", "Configuration tools");
    config->require_subcommand(1);
    auto* check = config->add_subcommand("check", "Validate a configuration file");
    check->add_option("--config", config_path, "Configuration file")->capture_default_str();

    auto* queue = app.add_subcommand("queue", "Inspect and manage the running server's queue");
    queue->require_subcommand(1);
    queue->add_option("--config", config_path, "Configuration file")->capture_default_str();
    queue->add_flag("--json", json_output, "Print the server's JSON answer");
    std::string queue_id;
    auto* queue_list = queue->add_subcommand("list", "List queued messages and their recipients");
    auto* queue_show = queue->add_subcommand("show", "Show one message in detail");
    queue_show->add_option("id", queue_id, "Queue id")->required();
    auto* queue_retry = queue->add_subcommand("retry", "Attempt delivery of one message now");
    queue_retry->add_option("id", queue_id, "Queue id")->required();
    auto* queue_release = queue->add_subcommand("release", "Release the recipients the policy held (quarantine, hold)");
    queue_release->add_option("id", queue_id, "Queue id")->required();
    auto* queue_delete = queue->add_subcommand("delete", "Delete one message from the queue");
    queue_delete->add_option("id", queue_id, "Queue id")->required();
    auto* queue_flush = queue->add_subcommand("flush", "Attempt every deferred message now");
    auto* queue_quarantine = queue->add_subcommand("quarantine", "List queue records set aside as unreadable");
    for (auto* sub : {queue_list, queue_show, queue_retry, queue_release, queue_delete, queue_flush, queue_quarantine}) {
        sub->add_option("--config", config_path, "Configuration file")->capture_default_str();
        sub->add_flag("--json", json_output, "Print the server's JSON answer");
    }

    auto* reload = app.add_subcommand("reload", "Make the running server re-read its configuration");
    reload->add_option("--config", config_path, "Configuration file")->capture_default_str();

    app::SearchCommand search_command;
    search_command.config_path = config_path;
    auto search = app::add_search_subcommand(app, search_command);

    auto* hash = app.add_subcommand("hash-password", "Print an Argon2id hash of a password read from standard input");

    app::ArchiveCommand archive_command;
    auto* archive = app.add_subcommand("archive", "The compliance archive");
    archive->require_subcommand(1);
    struct ArchiveAction {
        const char* name;
        const char* help;
    };
    const std::vector<ArchiveAction> archive_actions = {
        {"import", "Import a mail collection (prints 'imported N, duplicates D, failed F')"},
        {"list", "One line per message: ID<TAB>SHA256"},
        {"show", "A message's metadata record (JSON)"},
        {"get", "Write a message's exact original bytes to standard output"},
        {"verify", "Recompute every content hash, the hash chain and the signed checkpoints"},
        {"stats", "Message count, raw bytes, stored bytes"},
        {"prove", "An inclusion proof (Merkle path to a signed checkpoint) for a message"},
        {"compact", "Repack messages into strongly compressed packs"},
        {"rotate-key", "Start a new key-encryption key (old ones stay readable)"},
        {"backup", "A verified backup in DIR (RocksDB backup engine)"},
        {"restore", "Restore the latest backup from DIR into the empty archive directory"},
    };
    std::vector<CLI::App*> archive_subcommands;
    for (const auto& action : archive_actions) {
        auto* sub = archive->add_subcommand(action.name, action.help);
        sub->add_option("--config", archive_command.config_path, "Configuration file")->default_val(config_path);
        const std::string name = action.name;
        if (name == "import") {
            sub->add_option("--format", archive_command.format, "maildir, mbox, eml, pst or exchange-journal")
                ->required();
            sub->add_option("path", archive_command.path, "The collection")->required();
        }
        if (name == "list") sub->add_option("--limit", archive_command.limit, "At most N messages (0: all)");
        if (name == "show" || name == "get" || name == "prove")
            sub->add_option("id", archive_command.id, "Archive id")->required();
        if (name == "get" || name == "verify")
            sub->add_option("--escrow-key", archive_command.escrow_key,
                            "Escrow mode: an OpenPGP secret key file, held in memory only while needed");
        if (name == "backup" || name == "restore")
            sub->add_option("dir", archive_command.path, "Backup directory")->required();
        archive_subcommands.push_back(sub);
    }

    app::TokenCommand token_command;
    token_command.config_path = config_path;
    auto* token = app.add_subcommand("token", "Bearer tokens for the audit API");
    token->require_subcommand(1);
    auto* token_create = token->add_subcommand("create", "Create a token; prints it alone on the last line (shown once)");
    auto* token_list = token->add_subcommand("list", "List tokens: name, role, state, scope");
    auto* token_revoke = token->add_subcommand("revoke", "Revoke a token by name");
    for (auto* sub : {token_create, token_list, token_revoke})
        sub->add_option("--config", token_command.config_path, "Configuration file")->default_val(config_path);
    token_create->add_option("--name", token_command.name, "A unique name (letters, digits, - _ . @); the actor on the audit record")
        ->required();
    token_create->add_option("--role", token_command.role, "admin, auditor, legal or reviewer")->required();
    token_create->add_option("--expires", token_command.expires, "Expiry: a date (2027-01-31) or UTC date-time");
    token_create->add_option("--custodian", token_command.custodians, "Reviewer: an address whose mail it may see (repeat)");
    token_create->add_option("--domain", token_command.domains, "Reviewer: a domain whose mail it may see (repeat)");
    token_list->add_flag("--json", token_command.json, "JSON output");
    token_revoke->add_option("name", token_command.name, "The token's name")->required();

    app::PolicyCommand policy_command;
    policy_command.config_path = config_path;
    auto* policy = app.add_subcommand("policy", "The policy engine");
    policy->require_subcommand(1);
    auto* policy_explain = policy->add_subcommand("explain", "What the policy decides for a message, per recipient, and why");
    policy_explain->add_option("--config", policy_command.config_path, "Configuration file")->default_val(config_path);
    policy_explain->add_option("--from", policy_command.from, "Envelope sender")->required();
    policy_explain->add_option("--to", policy_command.to, "Envelope recipient (repeat)")->required();
    policy_explain->add_option("--direction", policy_command.direction, "outbound or inbound")
        ->check(CLI::IsMember({"outbound", "inbound"}));
    policy_explain->add_flag("--json", policy_command.json, "JSON output");
    policy_explain->add_option("message", policy_command.message_path, "The message (RFC 5322 file)")->required();
    auto* policy_scan = policy->add_subcommand("scan", "Evaluate the policy over a mail collection: rules fired, MB/s");
    policy_scan->add_option("--config", policy_command.config_path, "Configuration file")->default_val(config_path);
    policy_scan->add_option("--format", policy_command.format, "maildir, mbox, eml, pst or exchange-journal")->required();
    policy_scan->add_option("--from", policy_command.from, "Envelope sender (default: the From: header)");
    policy_scan->add_option("--to", policy_command.to, "Envelope recipient (repeat; default recipient@external.invalid)");
    policy_scan->add_option("--direction", policy_command.direction, "outbound or inbound")
        ->check(CLI::IsMember({"outbound", "inbound"}));
    policy_scan->add_flag("--json", policy_command.json, "JSON output");
    policy_scan->add_option("path", policy_command.message_path, "The collection")->required();

    app::KeysCommand keys_command;
    keys_command.config_path = config_path;
    auto* keys = app.add_subcommand("keys", "The gateway's OpenPGP keys");
    keys->require_subcommand(1);
    auto* keys_import = keys->add_subcommand("import", "Import keys (armored or binary, public or secret)");
    auto* keys_list = keys->add_subcommand("list", "List keys: fingerprint, addresses, source, trust, state");
    auto* keys_lookup = keys->add_subcommand("lookup", "Find an address's key through the lookup chain");
    auto* keys_generate = keys->add_subcommand("generate", "Generate a managed key for an address");
    auto* keys_export = keys->add_subcommand("export", "Print the public key of an address or fingerprint");
    for (auto* sub : {keys_import, keys_list, keys_lookup, keys_generate, keys_export})
        sub->add_option("--config", keys_command.config_path, "Configuration file")->default_val(config_path);
    keys_import->add_option("path", keys_command.argument, "Key file, or - for standard input")->required();
    keys_import->add_option("--address", keys_command.address,
                            "For a key without user IDs: the address to use it for (an unsigned user ID)");
    keys_lookup->add_option("address", keys_command.argument, "E-mail address")->required();
    keys_generate->add_option("address", keys_command.argument, "E-mail address")->required();
    keys_export->add_option("key", keys_command.argument, "Address or fingerprint")->required();
    keys_export->add_flag("!--binary", keys_command.armor, "Binary instead of ASCII armor");
    keys_list->add_flag("--json", keys_command.json, "JSON output");
    keys_lookup->add_flag("--json", keys_command.json, "JSON output");

    auto* api_command = app.add_subcommand("api", "The audit API");
    api_command->require_subcommand(1);
    auto* api_routes = api_command->add_subcommand("routes", "Every route the API serves, one per line: METHOD PATH");

    CLI11_PARSE(app, argc, argv);

    if (*policy_explain) return app::run_policy_explain(policy_command);
    if (*policy_scan) return app::run_policy_scan(policy_command);
    if (*api_routes) {
        for (const auto& route : api::ApiService::route_list()) std::cout << route << "\n";
        return 0;
    }

    if (*keys_import || *keys_list || *keys_lookup || *keys_generate || *keys_export) {
        keys_command.action = *keys_import ? "import" : *keys_list ? "list" : *keys_lookup ? "lookup"
                            : *keys_generate ? "generate" : "export";
        return app::run_keys(keys_command);
    }
    if (*token_create || *token_list || *token_revoke) {
        token_command.action = *token_create ? "create" : *token_list ? "list" : "revoke";
        return app::run_token(token_command);
    }

    if (*init) return app::run_init(init_options);
    for (std::size_t i = 0; i < archive_subcommands.size(); ++i) {
        if (*archive_subcommands[i]) {
            archive_command.action = archive_actions[i].name;
            return app::run_archive(archive_command);
        }
    }
    if (*serve) return app::run_serve(config_path);
    if (*search.search) {
        if (*search.reindex) search_command.action = "reindex";
        if (*search.report) search_command.action = "report";
        return app::run_search(search_command);
    }
    if (*check) {
        auto loaded = load_config(config_path);
        auto policy_loaded = policy::Policy::load(config_path);
        if (!loaded || !policy_loaded) {
            if (!loaded) std::cerr << loaded.error().message << "\n";
            if (!policy_loaded) std::cerr << policy_loaded.error().message << "\n";
            return 1;
        }
        std::cout << config_path << ": OK (" << (*policy_loaded)->rule_count() << " policy rules)\n";
        return 0;
    }
    if (*queue_list) {
        return control_command(config_path, {{"command", "queue.list"}}, json_output, [](const nlohmann::json& r) {
            for (const auto& message : r["messages"]) print_message(message, false);
            std::cout << r["messages"].size() << " message(s) in the queue\n";
        });
    }
    if (*queue_show) {
        return control_command(config_path, {{"command", "queue.show"}, {"id", queue_id}}, json_output,
                               [](const nlohmann::json& r) { print_message(r["message"], true); });
    }
    if (*queue_retry) {
        return control_command(config_path, {{"command", "queue.retry"}, {"id", queue_id}}, json_output,
                               [&](const nlohmann::json&) { std::cout << queue_id << ": scheduled now\n"; });
    }
    if (*queue_release) {
        return control_command(config_path, {{"command", "queue.release"}, {"id", queue_id}}, json_output,
                               [&](const nlohmann::json& r) {
                                   std::cout << queue_id << ": " << r["released"] << " recipient(s) released\n";
                               });
    }
    if (*queue_delete) {
        return control_command(config_path, {{"command", "queue.delete"}, {"id", queue_id}}, json_output,
                               [&](const nlohmann::json&) { std::cout << queue_id << ": deleted\n"; });
    }
    if (*queue_flush) {
        return control_command(config_path, {{"command", "queue.flush"}}, json_output, [](const nlohmann::json& r) {
            std::cout << "flushed: " << r["scheduled"] << " message(s) scheduled now\n";
        });
    }
    if (*queue_quarantine) {
        return control_command(config_path, {{"command", "queue.quarantine"}}, json_output,
                               [](const nlohmann::json& r) {
                                   for (const auto& record : r["records"]) {
                                       std::cout << record["key"].get<std::string>() << "  "
                                                 << record["reason"].get<std::string>() << "\n";
                                   }
                                   std::cout << r["records"].size() << " quarantined record(s)\n";
                               });
    }
    if (*reload) {
        return control_command(config_path, {{"command", "reload"}}, json_output,
                               [](const nlohmann::json&) { std::cout << "configuration reloaded\n"; });
    }
    if (*hash) {
        std::string password;
        if (isatty(STDIN_FILENO)) std::cerr << "Password: ";
        std::getline(std::cin, password);
        auto encoded = smtp::hash_password(password);
        if (!encoded) {
            std::cerr << "postvault: " << encoded.error().message << "\n";
            return 1;
        }
        std::cout << *encoded << "\n";
        return 0;
    }
    return 2;
}
