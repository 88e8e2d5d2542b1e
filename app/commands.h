// app/commands.h — the subcommands of the one `postvault` binary.
//
// main.cpp parses the command line with CLI11 and calls one of these; each
// returns the process exit status (0 success, 1 failure, 2 bad usage) and
// prints its own diagnostics on standard error.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace postvault::archive {
class Archive;
}
namespace postvault::api {
class TokenStore;
}

namespace postvault::app {

struct InitOptions {
    std::string directory = "var";
    std::string hostname;       // default: the machine's host name
    bool force = false;         // overwrite an existing configuration
};

struct ArchiveCommand {
    std::string config_path;
    std::string action;         // import|list|show|get|verify|stats|prove|compact|rotate-key|backup|restore
    std::string id;             // show, get, prove
    std::string format;         // import
    std::string path;           // import: the collection; backup/restore: the backup directory
    std::size_t limit = 0;      // list: 0 = all
    std::string escrow_key;     // get, verify in escrow mode: an OpenPGP secret key file
};

struct TokenCommand {
    std::string config_path;
    std::string action;                   // create | list | revoke
    std::string name;
    std::string role;                     // create
    std::string expires;                  // create: ISO date or UTC date-time; empty: never
    std::vector<std::string> custodians;  // create, reviewer
    std::vector<std::string> domains;     // create, reviewer
    bool json = false;                    // list
};

// "cli:<user name>": the actor a command line puts on the archive chain.
std::string cli_actor();

struct PolicyCommand {
    std::string config_path;
    std::string from;
    std::vector<std::string> to;
    std::string direction = "outbound";
    std::string message_path;             // explain: the message; scan: the collection
    std::string format;                   // scan
    bool json = false;
};

struct KeysCommand {
    std::string config_path;
    std::string action;          // import | list | lookup | generate | export
    std::string argument;        // import: a key file ("-": standard input); lookup, generate, export: an address
    std::string address;         // import: the address for keys without user IDs (--address)
    bool json = false;           // list, lookup
    bool armor = true;           // export
};

int run_init(const InitOptions& options);
int run_keys(const KeysCommand& command);
int run_policy_explain(const PolicyCommand& command);
int run_policy_scan(const PolicyCommand& command);
int run_token(const TokenCommand& command);
int run_serve(const std::string& config_path);
int run_archive(const ArchiveCommand& command);

// The archive's commands on the server's control socket ("archive.get", "archive.import").
std::map<std::string, std::function<nlohmann::json(const nlohmann::json&)>> archive_control_commands(
    archive::Archive& store);

// The token commands on the control socket ("token.create", "token.revoke"), and the one
// function behind them and the CLI: the store change plus its event on the archive chain.
std::map<std::string, std::function<nlohmann::json(const nlohmann::json&)>> token_control_commands(
    api::TokenStore& tokens, archive::Archive& store);
nlohmann::json run_token_request(api::TokenStore& tokens, archive::Archive& store, const nlohmann::json& request);

}  // namespace postvault::app
