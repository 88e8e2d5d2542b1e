// app/keys_command.cpp — `postvault keys import|list|lookup|generate|export`: the gateway's
// OpenPGP keyring (gateway/crypto/keyring.h). The commands work on the keyring directly, also
// while the server runs (GnuPG locks its files; the server notices the change on its next
// lookup).
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "common/config.h"
#include "common/log.h"
#include "gateway/crypto/keyring.h"

namespace postvault::app {

namespace {

int fail(const std::string& message) {
    std::cerr << "postvault: " << message << "\n";
    return 1;
}

std::string date_of(std::int64_t unix_time) {
    if (unix_time == 0) return "never";
    const std::time_t t = unix_time;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d", &tm);
    return text;
}

std::string state_of(const crypto::KeyInfo& key) {
    if (key.revoked) return "revoked";
    if (key.disabled) return "disabled";
    if (key.encrypt_since_unix == 0) return "no encryption subkey";
    if (!key.can_encrypt_at(std::time(nullptr))) return "expired";
    return "usable";
}

nlohmann::json key_json(const crypto::KeyInfo& key) {
    return {{"fingerprint", key.fingerprint}, {"addresses", key.addresses},  {"user_id", key.user_id},
            {"source", key.source},           {"trust", key.trust},          {"secret", key.secret},
            {"state", state_of(key)},         {"algorithm", key.algorithm},  {"created", key.created_unix},
            {"expires", key.encrypt_until_unix}};
}

void print_key(const crypto::KeyInfo& key) {
    std::cout << key.fingerprint << "  " << key.algorithm << "  " << key.source << " (" << key.trust << ")"
              << (key.secret ? "  secret" : "") << "  " << state_of(key) << "  expires " << date_of(key.encrypt_until_unix)
              << "\n";
    for (const auto& address : key.addresses) std::cout << "    <" << address << ">\n";
}

}  // namespace

int run_keys(const KeysCommand& command) {
    auto config = load_config(command.config_path);
    if (!config) return fail(config.error().message);
    (void)setup_logging("warn");  // to standard error: standard output is the answer
    auto keyring = crypto::Keyring::open(config->pgp);
    if (!keyring) return fail(keyring.error().message);
    crypto::Keyring& keys = **keyring;

    if (command.action == "import") {
        std::string data;
        if (command.argument == "-") {
            data.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        } else {
            std::ifstream file(command.argument, std::ios::binary);
            if (!file) return fail("cannot read " + command.argument);
            std::stringstream buffer;
            buffer << file.rdbuf();
            data = buffer.str();
        }
        auto imported = keys.import(data, "imported", command.address);
        if (!imported) return fail(command.argument + ": " + imported.error().message);
        for (const auto& key : *imported) print_key(key);
        std::cout << imported->size() << " key(s) imported\n";
        return 0;
    }
    if (command.action == "list") {
        const auto all = keys.list();
        if (command.json) {
            nlohmann::json out = nlohmann::json::array();
            for (const auto& key : all) out.push_back(key_json(key));
            std::cout << out.dump(2) << "\n";
            return 0;
        }
        for (const auto& key : all) print_key(key);
        std::cout << all.size() << " key(s)\n";
        return 0;
    }
    if (command.action == "lookup") {
        auto found = keys.lookup(command.argument);
        if (!found) return fail(found.error().message);
        if (command.json) {
            nlohmann::json out = key_json(found->key);
            out["found_by"] = found->source;
            out["tried"] = found->tried;
            std::cout << out.dump(2) << "\n";
            return 0;
        }
        for (const auto& line : found->tried) std::cout << "  " << line << "\n";
        std::cout << found->key.fingerprint << " found by " << found->source << " (" << found->key.trust << ")\n";
        return 0;
    }
    if (command.action == "generate") {
        auto made = keys.generate(command.argument);
        if (!made) return fail(made.error().message);
        print_key(*made);
        std::cout << made->fingerprint << "\n";
        return 0;
    }
    auto exported = keys.export_public(command.argument, command.armor);
    if (!exported) return fail(exported.error().message);
    std::cout << *exported;
    return 0;
}

}  // namespace postvault::app
