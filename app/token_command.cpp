// app/token_command.cpp — `postvault token create|list|revoke`: the audit API's bearer tokens.
//
// Creating or revoking a token is an event on the archive's hash chain ("token", subject = the
// token's name, actor = who ran the command). When the server runs, it holds the archive, so
// the command goes through its control socket ("token.create", "token.revoke"); otherwise the
// command opens the archive itself. `token create` prints the secret alone on its last line:
// it is shown once and only its SHA-256 is kept (audit-api/tokens.h).
#include <ctime>
#include <iostream>

#include "app/commands.h"
#include "archive/archive.h"
#include "audit-api/tokens.h"
#include "common/config.h"
#include "gateway/control/control.h"

namespace postvault::app {

namespace {

int fail(const std::string& message) {
    std::cerr << "postvault: " << message << "\n";
    return 1;
}

std::optional<std::int64_t> parse_expiry(const std::string& text) {
    std::tm tm{};
    const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == nullptr) {
        tm = {};
        end = strptime(text.c_str(), "%Y-%m-%d", &tm);
    }
    if (end == nullptr || !(*end == '\0' || (*end == 'Z' && end[1] == '\0'))) return std::nullopt;
    return static_cast<std::int64_t>(timegm(&tm));
}

}  // namespace

nlohmann::json run_token_request(api::TokenStore& tokens, archive::Archive& store, const nlohmann::json& request) {
    const std::string command = request.value("command", std::string());
    const std::string actor = request.value("actor", std::string("control"));
    const std::string name = request.value("name", std::string());
    if (command == "token.create") {
        auto role = api::parse_role(request.value("role", std::string()));
        if (!role) return control::error_json(role.error());
        auto made = api::create_token_on_record(tokens, store, name, *role, request.value("expires", std::int64_t{0}),
                                                request.value("custodians", std::vector<std::string>{}),
                                                request.value("domains", std::vector<std::string>{}), actor);
        if (!made) return control::error_json(made.error());
        return {{"ok", true}, {"token", made->secret}, {"info", api::to_json(made->token)}};
    }
    if (command == "token.revoke") {
        if (auto revoked = api::revoke_token_on_record(tokens, store, name, actor); !revoked)
            return control::error_json(revoked.error());
        return {{"ok", true}};
    }
    return control::error_json(Error::permanent("control.unknown", "unknown command " + command));
}

std::map<std::string, std::function<nlohmann::json(const nlohmann::json&)>> token_control_commands(
    api::TokenStore& tokens, archive::Archive& store) {
    auto run = [&tokens, &store](const nlohmann::json& request) { return run_token_request(tokens, store, request); };
    return {{"token.create", run}, {"token.revoke", run}};
}

int run_token(const TokenCommand& command) {
    auto loaded = load_config(command.config_path);
    if (!loaded) return fail(loaded.error().message);
    const Config& config = *loaded;
    api::TokenStore tokens(config.api.tokens_file);

    if (command.action == "list") {
        auto list = tokens.list();
        if (!list) return fail(list.error().message);
        if (command.json) {
            nlohmann::json out = nlohmann::json::array();
            for (const auto& token : *list) out.push_back(api::to_json(token));
            std::cout << out.dump(2) << "\n";
            return 0;
        }
        for (const auto& token : *list) {
            std::cout << token.name << "\t" << api::role_name(token.role) << "\t"
                      << (token.revoked ? "revoked" : token.expires && token.expires <= std::time(nullptr) ? "expired" : "live");
            for (const auto& c : token.custodians) std::cout << "\tcustodian:" << c;
            for (const auto& d : token.domains) std::cout << "\tdomain:" << d;
            std::cout << "\n";
        }
        return 0;
    }

    nlohmann::json request = {{"command", "token." + command.action}, {"name", command.name}, {"actor", cli_actor()}};
    if (command.action == "create") {
        if (!api::parse_role(command.role)) return fail(api::parse_role(command.role).error().message);
        request["role"] = command.role;
        request["custodians"] = command.custodians;
        request["domains"] = command.domains;
        if (!command.expires.empty()) {
            auto expires = parse_expiry(command.expires);
            if (!expires) return fail("--expires must be a date (2027-01-31) or a UTC date-time (2027-01-31T18:00:00Z)");
            request["expires"] = *expires;
        }
    }
    nlohmann::json response;
    auto writer = archive::Archive::open(config.archive, archive::OpenMode::writer);
    if (writer) {
        response = run_token_request(tokens, **writer, request);
    } else if (writer.error().code == "archive.in_use") {
        auto answer = control::send_request(config.server.control_socket, request, std::chrono::seconds(30));
        if (!answer) return fail("the archive is in use and the server cannot be reached: " + answer.error().message);
        response = *answer;
    } else {
        return fail(writer.error().message);
    }
    if (!response.value("ok", false)) return fail(response["error"].value("message", std::string("request failed")));
    if (command.action == "create") {
        const auto& info = response["info"];
        std::cerr << "token '" << command.name << "' (role " << info.value("role", std::string()) << ") created; "
                  << "it is shown once, keep it safe:\n";
        std::cout << response["token"].get<std::string>() << "\n";
    } else {
        std::cout << "token '" << command.name << "' revoked\n";
    }
    return 0;
}

}  // namespace postvault::app
