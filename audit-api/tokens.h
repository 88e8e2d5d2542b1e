// audit-api/tokens.h — bearer tokens and roles for the audit API.
//
// `postvault token create --role ROLE --name NAME` makes a token: "pvt_" + 43 characters of
// base64url (256 random bits). Only its SHA-256 is stored (a token this random needs no slow
// hash), with its name, role, creation time, optional expiry and, for reviewers, the
// custodians (addresses) and domains whose mail they may see. The store is one JSON file
// (api.tokens_file, mode 0600) replaced atomically; the server re-reads it when it changes, so
// a token created or revoked on the command line takes effect at the next request.
//
// Roles (what each may do is decided in audit-api/routes.cpp, one table):
//   admin     everything, including tokens
//   auditor   search and read
//   legal     search, read, legal holds, exports
//   reviewer  search and read, limited to the token's custodians and domains
//
// Thread safety: a TokenStore may be used from several threads at once. Errors:
// "token.io", "token.exists" (a live token has that name), "token.not_found",
// "token.invalid" (bad role, name or scope).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace postvault::archive {
class Archive;
}

namespace postvault::api {

enum class Role { admin, auditor, legal, reviewer };

Result<Role> parse_role(std::string_view name);
std::string_view role_name(Role role);

struct Token {
    std::string name;                     // unique among live tokens; the actor on the audit record
    Role role = Role::auditor;
    std::string hash;                     // hex SHA-256 of the secret
    std::int64_t created = 0;             // Unix seconds
    std::int64_t expires = 0;             // Unix seconds; 0: never
    std::int64_t revoked = 0;             // Unix seconds; 0: live
    std::vector<std::string> custodians;  // reviewer: lower-case addresses
    std::vector<std::string> domains;     // reviewer: lower-case domains
};

nlohmann::json to_json(const Token& token);  // without the hash

struct NewToken {
    Token token;
    std::string secret;  // shown once
};

class TokenStore {
public:
    explicit TokenStore(std::string path);

    Result<NewToken> create(const std::string& name, Role role, std::int64_t expires,
                            std::vector<std::string> custodians, std::vector<std::string> domains);
    Result<std::vector<Token>> list();
    // Marks the live token named `name` revoked.
    Status revoke(const std::string& name);
    // The live, unexpired token whose secret this is.
    std::optional<Token> authenticate(std::string_view secret, std::int64_t now);

private:
    Status load_if_changed();  // caller holds mutex_
    Status save();             // caller holds mutex_

    std::string path_;
    std::mutex mutex_;
    std::vector<Token> tokens_;
    std::int64_t loaded_mtime_ns_ = -1;
    std::int64_t loaded_size_ = -1;
};

// Creating and revoking with the change on the archive's hash chain ("token" events, subject =
// the name, actor = who): the one way the command line, the control socket and the API do it.
// A token whose event cannot be recorded is revoked again (not usable off the record).
Result<NewToken> create_token_on_record(TokenStore& tokens, archive::Archive& archive, const std::string& name,
                                        Role role, std::int64_t expires, std::vector<std::string> custodians,
                                        std::vector<std::string> domains, const std::string& actor);
Status revoke_token_on_record(TokenStore& tokens, archive::Archive& archive, const std::string& name,
                              const std::string& actor);

}  // namespace postvault::api
