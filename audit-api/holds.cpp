// audit-api/holds.cpp — see holds.h.
#include "audit-api/holds.h"

#include <ctime>

#include "common/mail.h"

namespace postvault::api {

namespace {

constexpr std::size_t kMaxListed = 10000;  // custodians or message ids in one hold

Hold hold_from_json(const nlohmann::json& j) {
    Hold hold;
    hold.id = j.value("id", std::string());
    hold.name = j.value("name", std::string());
    hold.reason = j.value("reason", std::string());
    hold.query = j.value("query", std::string());
    hold.custodians = j.value("custodians", std::vector<std::string>{});
    hold.message_ids = j.value("message_ids", std::vector<std::string>{});
    hold.created = j.value("created", std::int64_t{0});
    hold.created_by = j.value("created_by", std::string());
    hold.released = j.value("released", std::int64_t{0});
    hold.released_by = j.value("released_by", std::string());
    hold.release_reason = j.value("release_reason", std::string());
    return hold;
}

std::string quoted(const std::string& text) {
    std::string out = "\"";
    for (char c : text)
        if (c != '"') out += c;
    return out + "\"";
}

bool plain_id(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    for (unsigned char c : id)
        if (!std::isalnum(c)) return false;
    return true;
}

}  // namespace

nlohmann::json to_json(const Hold& hold) {
    nlohmann::json j = {{"id", hold.id},
                        {"name", hold.name},
                        {"reason", hold.reason},
                        {"created", hold.created},
                        {"created_by", hold.created_by},
                        {"released", hold.released},
                        {"state", hold.released ? "released" : "active"}};
    if (!hold.query.empty()) j["query"] = hold.query;
    if (!hold.custodians.empty()) j["custodians"] = hold.custodians;
    if (!hold.message_ids.empty()) j["message_ids"] = hold.message_ids;
    if (hold.released) {
        j["released_by"] = hold.released_by;
        j["release_reason"] = hold.release_reason;
    }
    return j;
}

std::string hold_query(const Hold& hold) {
    if (!hold.query.empty()) return hold.query;
    std::string query;
    auto add = [&query](const std::string& clause) {
        if (!query.empty()) query += " OR ";
        query += clause;
    };
    for (const auto& custodian : hold.custodians) add("participant:" + quoted(custodian));
    for (const auto& id : hold.message_ids) add("id:" + id);
    return query;
}

Result<Hold> Holds::create(Hold hold, const std::string& actor) {
    auto invalid = [](const std::string& message) { return Error::permanent("hold.invalid", message); };
    if (hold.name.empty() || hold.name.size() > 200) return invalid("a hold needs a name (at most 200 bytes)");
    if (hold.reason.empty() || hold.reason.size() > 4000) return invalid("a hold needs a reason (at most 4000 bytes)");
    const int given = !hold.query.empty() + !hold.custodians.empty() + !hold.message_ids.empty();
    if (given != 1) return invalid("give exactly one of query, custodians or message_ids");
    if (hold.custodians.size() > kMaxListed || hold.message_ids.size() > kMaxListed)
        return invalid("at most " + std::to_string(kMaxListed) + " custodians or message ids per hold");
    for (auto& custodian : hold.custodians) {
        custodian = lowercase(custodian);
        if (custodian.find('@') == std::string::npos || custodian.find_first_of("\" \t\r\n") != std::string::npos)
            return invalid("custodian '" + custodian + "' is not an address");
    }
    for (const auto& id : hold.message_ids) {
        if (!plain_id(id)) return invalid("'" + id + "' is not a message id");
        if (auto record = archive_.metadata(id); !record) return invalid("no archived message " + id);
    }
    for (const auto& other : list())
        if (other.name == hold.name && !other.released) return invalid("an active hold is already named '" + hold.name + "'");
    hold.id = "H" + make_message_id();
    hold.created = std::time(nullptr);
    hold.created_by = actor;
    hold.released = 0;
    const std::string text = to_json(hold).dump();
    if (auto stored = archive_.put_record("hold", hold.id, text, "hold", actor); !stored) return stored.error();
    return hold;
}

Result<Hold> Holds::get(const std::string& id) const {
    if (!plain_id(id)) return Error::permanent("hold.not_found", "no hold " + id);
    auto text = archive_.record("hold", id);
    if (!text) return text.error();
    if (!*text) return Error::permanent("hold.not_found", "no hold " + id);
    auto parsed = nlohmann::json::parse(**text, nullptr, false);
    if (parsed.is_discarded()) return Error::permanent("archive.corrupt", "hold " + id + ": unreadable record");
    return hold_from_json(parsed);
}

std::vector<Hold> Holds::list() const {
    std::vector<Hold> out;
    for (const auto& [key, text] : archive_.records("hold")) {
        auto parsed = nlohmann::json::parse(text, nullptr, false);
        if (!parsed.is_discarded()) out.push_back(hold_from_json(parsed));
    }
    return out;
}

std::optional<std::string> Holds::active_query(const std::string& name_or_id) const {
    for (const auto& hold : list())
        if (!hold.released && (hold.id == name_or_id || hold.name == name_or_id)) return hold_query(hold);
    return std::nullopt;
}

Status Holds::release(const std::string& id, const std::string& actor, const std::string& reason) {
    auto hold = get(id);
    if (!hold) return hold.error();
    if (hold->released) return Error::permanent("hold.released", "hold " + id + " was released already");
    if (reason.empty() || reason.size() > 4000)
        return Error::permanent("hold.invalid", "releasing a hold needs a reason (at most 4000 bytes)");
    hold->released = std::time(nullptr);
    hold->released_by = actor;
    hold->release_reason = reason;
    const std::string text = to_json(*hold).dump();
    return archive_.put_record("hold", id, text, "release", actor);
}

}  // namespace postvault::api
