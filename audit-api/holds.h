// audit-api/holds.h — legal holds: named, reasoned sets of archived mail kept from disposal.
//
// A hold covers the messages matching a search query, the mail of custodians (any message
// they send or receive: participant:), or a list of message ids. Query and custodian holds are
// evaluated against the index when asked, so they keep covering mail archived later; a
// message is covered from the moment it is indexed (normally within search.commit_interval
// of its archiving). Holds are records in the archive (kind "hold"); creating one is a "hold"
// event on the hash chain and releasing one a "release" event, with who and why; a released
// hold is kept, marked released, never deleted.
//
// Errors: "hold.invalid" (name, reason, or not exactly one of query/custodians/message_ids),
// "hold.not_found", "hold.released"; archive errors pass through. Thread safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "archive/archive.h"
#include "common/result.h"

namespace postvault::api {

struct Hold {
    std::string id, name, reason;
    std::string query;                     // one of these three
    std::vector<std::string> custodians;   // lower-case addresses
    std::vector<std::string> message_ids;  // archive ids
    std::int64_t created = 0;
    std::string created_by;
    std::int64_t released = 0;             // 0: in force
    std::string released_by, release_reason;
};

nlohmann::json to_json(const Hold& hold);

// The search query whose matches the hold covers.
std::string hold_query(const Hold& hold);

class Holds {
public:
    explicit Holds(archive::Archive& archive) : archive_(archive) {}

    // Validates and stores a new hold (the caller has checked that its query parses).
    Result<Hold> create(Hold hold, const std::string& actor);
    Result<Hold> get(const std::string& id) const;
    std::vector<Hold> list() const;
    Status release(const std::string& id, const std::string& actor, const std::string& reason);
    // The query of the active hold with this name or id (what `hold:NAME` searches for).
    std::optional<std::string> active_query(const std::string& name_or_id) const;

private:
    archive::Archive& archive_;
};

}  // namespace postvault::api
