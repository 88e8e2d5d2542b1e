// audit-api/routes.cpp — see routes.h.
#include "audit-api/routes.h"

#include <array>
#include <charconv>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstring>
#include <ctime>
#include <list>
#include <map>
#include <unordered_map>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "archive/chain.h"
#include "audit-api/exports.h"
#include "audit-api/holds.h"
#include "common/mail.h"
#include "common/utf8.h"
#include "search/extract.h"
#include "search/index.h"
#include "search/result_json.h"
#include "search/searcher.h"

namespace postvault::api {

namespace {

using Json = nlohmann::json;
using Params = std::map<std::string, std::string>;
using Clock = std::chrono::steady_clock;

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n"; }

Reply json_reply(const Json& j, http::status status = http::status::ok) {
    Reply reply;
    reply.status = status;
    reply.body = dump(j);
    return reply;
}

// --- targets ---------------------------------------------------------------------------------

// Percent-decoding ('+' is a space in query strings); nullopt on a broken escape or NUL.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;
            const int high = hex_digit_value(text[i + 1]), low = hex_digit_value(text[i + 2]);
            if (high < 0 || low < 0) return std::nullopt;
            c = static_cast<char>(high * 16 + low);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == '\0') return std::nullopt;
        out += c;
    }
    return out;
}

struct Target {
    std::vector<std::string> segments;  // decoded path segments
    Params params;
};

Result<Target> parse_target(std::string_view target) {
    Target out;
    const std::size_t question = target.find('?');
    const std::string_view path = target.substr(0, question);
    if (path.empty() || path[0] != '/') return Error::permanent("request.target", "the target must be an absolute path");
    std::size_t start = 1;
    while (start <= path.size()) {
        const std::size_t slash = path.find('/', start);
        const std::string_view raw = path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
        auto segment = percent_decode(raw, false);
        if (!segment || segment->find('/') != std::string::npos || *segment == "." || *segment == "..")
            return Error::permanent("request.target", "bad path segment");
        if (!segment->empty() || slash != std::string_view::npos) out.segments.push_back(std::move(*segment));
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    if (!out.segments.empty() && out.segments.back().empty()) out.segments.pop_back();  // trailing slash
    if (question != std::string_view::npos) {
        std::string_view query = target.substr(question + 1);
        while (!query.empty()) {
            const std::size_t amp = query.find('&');
            const std::string_view pair = query.substr(0, amp);
            const std::size_t equals = pair.find('=');
            auto name = percent_decode(pair.substr(0, equals), true);
            auto value = percent_decode(equals == std::string_view::npos ? "" : pair.substr(equals + 1), true);
            if (!name || !value) return Error::permanent("request.target", "bad percent-encoding in the query string");
            if (!name->empty()) {
                if (out.params.count(*name)) return Error::permanent("request.parameter", "parameter '" + *name + "' given twice");
                out.params[*name] = std::move(*value);
            }
            if (amp == std::string_view::npos) break;
            query = query.substr(amp + 1);
        }
    }
    return out;
}

bool valid_id(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    for (unsigned char c : id)
        if (!std::isalnum(c)) return false;
    return true;
}

// --- routes ------------------------------------------------------------------------------------

// Role bit sets: bit n is Role n (admin, auditor, legal, reviewer).
constexpr unsigned kEveryone = 1 | 2 | 4 | 8;
constexpr unsigned kAuditors = 1 | 2;
constexpr unsigned kLegal = 1 | 4;
constexpr unsigned kHoldReaders = 1 | 2 | 4;
constexpr unsigned kAdmin = 1;

bool allowed(unsigned roles, Role role) { return (roles & (1u << static_cast<unsigned>(role))) != 0; }

struct Call {
    const Request& request;
    const Client& client;
    const Target& target;
    std::vector<std::string> captures;  // {param} values in pattern order
    std::optional<Token> token;
    Json body;                          // parsed JSON body (POST)
    std::string subject;                // the audit record's subject (a message, a token...)
};


// Query parameters allowed by a route; others are 400 (a typo must not silently widen a search).
Status check_params(const Params& params, std::initializer_list<std::string_view> known) {
    for (const auto& [name, value] : params) {
        bool ok = false;
        for (auto k : known) ok = ok || name == k;
        if (!ok) return Error::permanent("request.parameter", "unknown parameter '" + name + "'");
    }
    return Status::success();
}

Status check_fields(const Json& body, std::initializer_list<std::string_view> known) {
    for (const auto& [name, value] : body.items()) {
        bool ok = false;
        for (auto k : known) ok = ok || name == k;
        if (!ok) return Error::permanent("request.field", "unknown field '" + name + "'");
    }
    return Status::success();
}

http::status status_of(const Error& error) {
    const std::string& code = error.code;
    if (code.ends_with(".not_found")) return http::status::not_found;
    if (code.ends_with(".exists") || code.ends_with(".released") || code.ends_with(".not_ready")) return http::status::conflict;
    if (error.is_temporary()) return http::status::service_unavailable;
    return http::status::bad_request;
}

Reply error_of(const Error& error) { return error_reply(status_of(error), error.code, error.message); }

// --- metrics ---------------------------------------------------------------------------------

constexpr std::array<double, 11> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

struct RouteMetrics {
    std::array<std::atomic<std::uint64_t>, kBuckets.size()> buckets{};
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> micros{0};
    std::map<unsigned, std::uint64_t> statuses;  // guarded by Impl::metrics_mutex
};

// Recently read message texts for snippets: reading a message back (decrypt, decompress, MIME
// parse, attachment text) costs far more than finding its snippet, and result pages repeat the
// same messages (paging, the same question refined). Least recently used out past the budget.
class TextCache {
public:
    explicit TextCache(std::size_t budget) : budget_(budget) {}

    std::shared_ptr<const std::string> find(const std::string& id) {
        std::lock_guard lock(mutex_);
        auto it = entries_.find(id);
        if (it == entries_.end()) return nullptr;
        order_.splice(order_.begin(), order_, it->second.position);
        return it->second.text;
    }

    void insert(const std::string& id, std::shared_ptr<const std::string> text) {
        std::lock_guard lock(mutex_);
        if (text->size() > budget_ / 8 || entries_.count(id)) return;
        order_.push_front(id);
        bytes_ += text->size() + id.size();
        entries_[id] = {std::move(text), order_.begin()};
        while (bytes_ > budget_ && !order_.empty()) {
            auto last = entries_.find(order_.back());
            bytes_ -= last->second.text->size() + last->first.size();
            entries_.erase(last);
            order_.pop_back();
        }
    }

private:
    struct Entry {
        std::shared_ptr<const std::string> text;
        std::list<std::string>::iterator position;
    };
    std::mutex mutex_;
    std::size_t budget_;
    std::size_t bytes_ = 0;
    std::list<std::string> order_;  // most recent first
    std::unordered_map<std::string, Entry> entries_;
};

}  // namespace

struct ApiService::Impl {
    struct Route {
        http::verb method;
        std::string pattern;  // "/api/v1/messages/{id}/raw"
        unsigned roles;       // 0: no authentication
        std::uint64_t body_limit;
        Reply (Impl::*run)(Call&);
        std::vector<std::string> parts;  // pattern split
    };

    ApiContext context;
    TextCache texts{64 * 1024 * 1024};
    Holds holds;
    std::unique_ptr<Exports> exports;  // only with an archive (not for route_list())
    std::vector<Route> routes;
    std::mutex searchers_mutex;
    std::vector<std::unique_ptr<search::Searcher>> idle_searchers;
    std::mutex metrics_mutex;
    std::mutex recording_mutex;
    std::condition_variable recorded;
    std::size_t recording = 0;  // calls whose audit record is being written
    std::map<std::string, std::unique_ptr<RouteMetrics>> metrics;  // by route pattern
    std::atomic<std::uint64_t> unauthorized{0};

    // Integrity: one verification at a time, in the background; the last report is kept.
    std::mutex integrity_mutex;
    std::thread integrity_thread;
    bool integrity_running = false;
    std::optional<Json> integrity_report;
    std::int64_t integrity_started = 0, integrity_finished = 0;

    explicit Impl(ApiContext c)
        : context(std::move(c)),
          holds(*context.archive),
          exports(std::make_unique<Exports>(*context.archive, holds, context.config)),
          routes(make_routes(context.config.api.max_body_size)) {}

    // The one route table.
    static std::vector<Route> make_routes(std::uint64_t json_limit) {
        std::vector<Route> routes;
        auto add = [&routes](http::verb method, std::string pattern, unsigned roles, std::uint64_t limit,
                             Reply (Impl::*run)(Call&)) {
            Route route{method, pattern, roles, limit, run, {}};
            std::size_t start = 1;
            for (;;) {
                const std::size_t slash = pattern.find('/', start);
                route.parts.push_back(pattern.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
                if (slash == std::string::npos) break;
                start = slash + 1;
            }
            routes.push_back(std::move(route));
        };
        using V = http::verb;
        add(V::get, "/api/v1/health", 0, 0, &Impl::health);
        add(V::get, "/.well-known/openpgpkey/hu/{hash}", 0, 0, &Impl::wkd_direct);
        add(V::get, "/.well-known/openpgpkey/policy", 0, 0, &Impl::wkd_policy_direct);
        add(V::get, "/.well-known/openpgpkey/{domain}/hu/{hash}", 0, 0, &Impl::wkd_advanced);
        add(V::get, "/.well-known/openpgpkey/{domain}/policy", 0, 0, &Impl::wkd_policy_advanced);
        add(V::get, "/api/v1/metrics", kAuditors, 0, &Impl::metrics_text);
        add(V::get, "/api/v1/search", kEveryone, 0, &Impl::search_get);
        add(V::post, "/api/v1/search", kEveryone, json_limit, &Impl::search_post);
        add(V::get, "/api/v1/search/count", kEveryone, 0, &Impl::search_count);
        add(V::get, "/api/v1/search/facets", kEveryone, 0, &Impl::search_facets);
        add(V::post, "/api/v1/search/term-report", kEveryone, json_limit, &Impl::term_report);
        add(V::get, "/api/v1/messages/{id}", kEveryone, 0, &Impl::message_metadata);
        add(V::get, "/api/v1/messages/{id}/raw", kEveryone, 0, &Impl::message_raw);
        add(V::get, "/api/v1/messages/{id}/text", kEveryone, 0, &Impl::message_text);
        add(V::get, "/api/v1/messages/{id}/attachments/{n}", kEveryone, 0, &Impl::message_attachment);
        add(V::post, "/api/v1/holds", kLegal, json_limit, &Impl::holds_create);
        add(V::get, "/api/v1/holds", kHoldReaders, 0, &Impl::holds_list);
        add(V::get, "/api/v1/holds/{id}", kHoldReaders, 0, &Impl::holds_get);
        add(V::delete_, "/api/v1/holds/{id}", kLegal, json_limit, &Impl::holds_release);
        add(V::post, "/api/v1/exports", kLegal, json_limit, &Impl::exports_create);
        add(V::get, "/api/v1/exports", kLegal, 0, &Impl::exports_list);
        add(V::get, "/api/v1/exports/{id}", kLegal, 0, &Impl::exports_get);
        add(V::get, "/api/v1/exports/{id}/download", kLegal, 0, &Impl::exports_download);
        add(V::get, "/api/v1/exports/{id}/manifest", kLegal, 0, &Impl::exports_manifest);
        add(V::get, "/api/v1/audit", kAuditors, 0, &Impl::audit);
        add(V::get, "/api/v1/integrity", kAuditors, 0, &Impl::integrity);
        add(V::get, "/api/v1/tokens", kAdmin, 0, &Impl::tokens_list);
        add(V::post, "/api/v1/tokens", kAdmin, json_limit, &Impl::tokens_create);
        add(V::delete_, "/api/v1/tokens/{name}", kAdmin, 0, &Impl::tokens_revoke);
        return routes;
    }

    ~Impl() {
        if (integrity_thread.joinable()) integrity_thread.join();
        // Calls whose audit record is still with the archive's committer use this object when
        // it is written: wait for them (the archive outlives the service).
        std::unique_lock lock(recording_mutex);
        recorded.wait(lock, [this] { return recording == 0; });
    }

    // The route for a method and path; `path_known` tells 405 from 404.
    const Route* find(http::verb method, const Target& target, std::vector<std::string>& captures, bool& path_known) {
        path_known = false;
        for (const Route& route : routes) {
            if (route.parts.size() != target.segments.size()) continue;
            std::vector<std::string> values;
            bool match = true;
            for (std::size_t i = 0; i < route.parts.size() && match; ++i) {
                if (route.parts[i].starts_with("{")) values.push_back(target.segments[i]);
                else match = route.parts[i] == target.segments[i];
            }
            if (!match) continue;
            path_known = true;
            if (route.method != method) continue;
            captures = std::move(values);
            return &route;
        }
        return nullptr;
    }

    // --- searchers: one per worker thread at a time -------------------------------------
    struct Lease {
        Impl* impl;
        std::unique_ptr<search::Searcher> searcher;
        Lease(Impl* owner, std::unique_ptr<search::Searcher> taken) : impl(owner), searcher(std::move(taken)) {}
        Lease(Lease&& other) noexcept : impl(other.impl), searcher(std::move(other.searcher)) {}
        Lease& operator=(Lease&&) = delete;
        ~Lease() {
            if (!searcher) return;
            (void)searcher->restrict_to("");
            std::lock_guard lock(impl->searchers_mutex);
            impl->idle_searchers.push_back(std::move(searcher));
        }
    };

    Result<Lease> lease(const Call& call) {
        Lease lease{this, nullptr};
        {
            std::lock_guard lock(searchers_mutex);
            if (!idle_searchers.empty()) {
                lease.searcher = std::move(idle_searchers.back());
                idle_searchers.pop_back();
            }
        }
        if (lease.searcher && !lease.searcher->refresh()) lease.searcher.reset();  // see the latest commit
        if (!lease.searcher) {
            auto opened = search::Searcher::open(context.config.search.directory, context.config.search.language);
            if (!opened) return opened.error();
            lease.searcher = std::move(*opened);
            lease.searcher->set_hold_queries([this](const std::string& name) { return holds.active_query(name); });
        }
        if (call.token && call.token->role == Role::reviewer)
            if (auto scoped = lease.searcher->restrict_to(scope_query(*call.token)); !scoped) return scoped.error();
        return lease;
    }

    static std::string scope_query(const Token& token) {
        std::string query;
        auto add = [&query](const std::string& clause) {
            if (!query.empty()) query += " OR ";
            query += clause;
        };
        for (const auto& custodian : token.custodians) add("participant:\"" + custodian + "\"");
        for (const auto& domain : token.domains) add("domain:\"" + domain + "\"");
        return query.empty() ? "NOT *" : query;
    }

    // Is message `id` visible to this caller? (reviewers: inside their scope)
    Result<bool> visible(const Call& call, const std::string& id) {
        if (!call.token || call.token->role != Role::reviewer) return true;
        auto searcher = lease(call);
        if (!searcher) return searcher.error();
        auto count = searcher->searcher->count("id:" + id, true);
        if (!count) return count.error().code == "search.not_found" ? Result<bool>(false) : Result<bool>(count.error());
        return *count > 0;
    }

    // --- request parameters ---------------------------------------------------------------
    Result<std::size_t> limit_of(const std::string& text) {
        std::size_t limit = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), limit);
        if (error != std::errc() || end != text.data() + text.size() || limit == 0 || limit > context.config.api.max_limit)
            return Error::permanent("request.limit", "limit must be a whole number from 1 to " +
                                                         std::to_string(context.config.api.max_limit));
        return limit;
    }

    Result<bool> flag_of(const std::string& name, const std::string& text) {
        if (text == "true" || text == "1") return true;
        if (text == "false" || text == "0") return false;
        return Error::permanent("request.parameter", name + " must be true or false");
    }

    // --- routes ----------------------------------------------------------------------------
    Reply health(Call& call) {
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        return json_reply({{"status", "ok"}});
    }

    // --- the Web Key Directory ------------------------------------------------------------
    // The direct method names the domain in the Host field, the advanced one in the path.
    static std::string host_domain(const Call& call) {
        std::string host(call.request[http::field::host]);
        if (const auto colon = host.rfind(':'); colon != std::string::npos && host.find(']') == std::string::npos)
            host.resize(colon);
        return lowercase(host);
    }

    bool wkd_serves(const std::string& domain) const {
        if (!context.wkd_keys) return false;
        for (const auto& served : context.wkd_domains)
            if (lowercase(served) == domain) return true;
        return false;
    }

    Reply wkd_key(Call& call, const std::string& raw_domain, const std::string& hash) {
        const std::string domain = lowercase(raw_domain);
        if (!wkd_serves(domain)) return error_reply(http::status::not_found, "wkd.domain", "no Web Key Directory for this domain");
        auto keys = context.wkd_keys(domain, hash);
        if (!keys) {
            if (keys.error().code == "pgp.no_key") return error_reply(http::status::not_found, "wkd.no_key", keys.error().message);
            return error_of(keys.error());
        }
        spdlog::info("api: wkd: served the key of {} ({}) to {}", hash, domain, call.client.address);
        Reply reply;
        reply.content_type = "application/octet-stream";
        reply.body = std::move(*keys);
        reply.headers.emplace_back("Access-Control-Allow-Origin", "*");
        return reply;
    }

    Reply wkd_policy(const std::string& raw_domain) {
        if (!wkd_serves(lowercase(raw_domain)))
            return error_reply(http::status::not_found, "wkd.domain", "no Web Key Directory for this domain");
        Reply reply;
        reply.content_type = "text/plain";  // an empty policy: the defaults
        reply.headers.emplace_back("Access-Control-Allow-Origin", "*");
        return reply;
    }

    Reply wkd_direct(Call& call) {
        if (auto ok = check_params(call.target.params, {"l"}); !ok) return error_of(ok.error());
        return wkd_key(call, host_domain(call), call.captures[0]);
    }

    Reply wkd_advanced(Call& call) {
        if (auto ok = check_params(call.target.params, {"l"}); !ok) return error_of(ok.error());
        return wkd_key(call, call.captures[0], call.captures[1]);
    }

    Reply wkd_policy_direct(Call& call) {
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        return wkd_policy(host_domain(call));
    }

    Reply wkd_policy_advanced(Call& call) {
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        return wkd_policy(call.captures[0]);
    }

    Reply run_search(Call& call, search::SearchRequest request) {
        if (request.query.empty()) return error_reply(http::status::bad_request, "request.query", "q (the query) is required");
        auto searcher = lease(call);
        if (!searcher) {
            if (searcher.error().code == "search.not_found")
                return json_reply({{"total", 0}, {"results", Json::array()}, {"next_cursor", nullptr}});
            return error_of(searcher.error());
        }
        auto text_of = [this](const std::string& id) -> Result<std::shared_ptr<const std::string>> {
            if (auto cached = texts.find(id)) return cached;
            auto bytes = context.archive->content(id);
            if (!bytes) return bytes.error();
            auto text = std::make_shared<const std::string>(search::searchable_text(search::extract_message(*bytes)));
            texts.insert(id, text);
            return text;
        };
        auto result = searcher->searcher->search(request, text_of);
        if (!result) return error_of(result.error());
        Reply reply;  // text written without a JSON tree (result_json.h)
        reply.body = search::result_json(*result) + "\n";
        return reply;
    }

    Reply search_get(Call& call) {
        const Params& p = call.target.params;
        if (auto ok = check_params(p, {"q", "limit", "cursor", "sort", "exact", "facets", "html"}); !ok) return error_of(ok.error());
        search::SearchRequest request;
        if (auto it = p.find("q"); it != p.end()) request.query = it->second;
        if (auto it = p.find("limit"); it != p.end()) {
            auto limit = limit_of(it->second);
            if (!limit) return error_of(limit.error());
            request.limit = *limit;
        }
        if (auto it = p.find("cursor"); it != p.end()) request.cursor = it->second;
        if (auto it = p.find("sort"); it != p.end()) request.sort = it->second;
        for (auto [name, field] : {std::pair{"exact", &request.exact}, std::pair{"facets", &request.facets},
                                   std::pair{"html", &request.html}}) {
            if (auto it = p.find(name); it != p.end()) {
                auto flag = flag_of(name, it->second);
                if (!flag) return error_of(flag.error());
                *field = *flag;
            }
        }
        return run_search(call, request);
    }

    Reply search_post(Call& call) {
        const Json& b = call.body;
        if (auto ok = check_fields(b, {"query", "limit", "cursor", "sort", "exact", "facets", "html"}); !ok) return error_of(ok.error());
        search::SearchRequest request;
        try {
            request.query = b.at("query").get<std::string>();
            if (b.contains("limit")) {
                const auto& limit = b["limit"];
                if (!limit.is_number_unsigned() || limit.get<std::uint64_t>() == 0 ||
                    limit.get<std::uint64_t>() > context.config.api.max_limit)
                    return error_reply(http::status::bad_request, "request.limit",
                                       "limit must be a whole number from 1 to " + std::to_string(context.config.api.max_limit));
                request.limit = limit.get<std::size_t>();
            }
            if (b.contains("cursor") && !b["cursor"].is_null()) request.cursor = b["cursor"].get<std::string>();
            if (b.contains("sort")) request.sort = b["sort"].get<std::string>();
            if (b.contains("exact")) request.exact = b["exact"].get<bool>();
            if (b.contains("facets")) request.facets = b["facets"].get<bool>();
            if (b.contains("html")) request.html = b["html"].get<bool>();
        } catch (const Json::exception&) {
            return error_reply(http::status::bad_request, "request.field",
                               "query (string) is required; limit is a number, cursor and sort strings, exact, facets and html booleans");
        }
        return run_search(call, request);
    }

    Reply search_count(Call& call) {
        const Params& p = call.target.params;
        if (auto ok = check_params(p, {"q", "exact"}); !ok) return error_of(ok.error());
        auto q = p.find("q");
        if (q == p.end() || q->second.empty()) return error_reply(http::status::bad_request, "request.query", "q (the query) is required");
        bool exact = false;
        if (auto it = p.find("exact"); it != p.end()) {
            auto flag = flag_of("exact", it->second);
            if (!flag) return error_of(flag.error());
            exact = *flag;
        }
        auto searcher = lease(call);
        if (!searcher) {
            if (searcher.error().code == "search.not_found") return json_reply({{"total", 0}});
            return error_of(searcher.error());
        }
        auto count = searcher->searcher->count(q->second, exact);
        if (!count) return error_of(count.error());
        return json_reply({{"total", *count}});
    }

    Reply search_facets(Call& call) {
        const Params& p = call.target.params;
        if (auto ok = check_params(p, {"q", "exact"}); !ok) return error_of(ok.error());
        search::SearchRequest request;
        if (auto it = p.find("q"); it != p.end()) request.query = it->second;
        if (request.query.empty()) return error_reply(http::status::bad_request, "request.query", "q (the query) is required");
        if (auto it = p.find("exact"); it != p.end()) {
            auto flag = flag_of("exact", it->second);
            if (!flag) return error_of(flag.error());
            request.exact = *flag;
        }
        request.facets = true;
        request.limit = 1;
        auto searcher = lease(call);
        if (!searcher) {
            if (searcher.error().code == "search.not_found")
                return json_reply({{"total", 0}, {"facets", search::facets_json({})}});
            return error_of(searcher.error());
        }
        auto result = searcher->searcher->search(request);
        if (!result) return error_of(result.error());
        return json_reply({{"total", result->total}, {"facets", search::facets_json(*result->facets)}});
    }

    Reply term_report(Call& call) {
        const Json& b = call.body;
        if (auto ok = check_fields(b, {"queries", "exact"}); !ok) return error_of(ok.error());
        std::vector<std::string> queries;
        bool exact = false;
        try {
            queries = b.at("queries").get<std::vector<std::string>>();
            if (b.contains("exact")) exact = b["exact"].get<bool>();
        } catch (const Json::exception&) {
            return error_reply(http::status::bad_request, "request.field", "queries must be a list of query strings");
        }
        if (queries.empty() || queries.size() > 1000)
            return error_reply(http::status::bad_request, "request.field", "queries must hold 1 to 1000 queries");
        auto searcher = lease(call);
        if (!searcher && searcher.error().code == "search.not_found") {  // no index yet: nothing matches
            search::TermReport empty;
            for (const auto& query : queries) empty.rows.push_back({query, 0, 0, 0, {}});
            return json_reply(search::report_json(empty));
        }
        if (!searcher) return error_of(searcher.error());
        auto report = searcher->searcher->term_report(queries, exact);
        if (!report) return error_of(report.error());
        return json_reply(search::report_json(*report));
    }

    // The message id of the path, checked and visible to the caller; else the reply to send.
    std::optional<Reply> check_message(Call& call) {
        const std::string& id = call.captures.at(0);
        call.subject = id;
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        if (!valid_id(id)) return error_reply(http::status::bad_request, "request.id", "a message id is letters and digits");
        auto record = context.archive->metadata(id);
        if (!record) return error_of(record.error());
        auto seen = visible(call, id);
        if (!seen) return error_of(seen.error());
        if (!*seen) return error_reply(http::status::not_found, "archive.not_found", "no archived message " + id);  // as if absent
        return std::nullopt;
    }

    std::string actor_of(const Call& call) const { return call.token ? "api:" + call.token->name : "api"; }

    Reply message_metadata(Call& call) {
        if (auto refused = check_message(call)) return *refused;
        const std::string& id = call.captures[0];
        auto record = context.archive->metadata(id);
        if (!record) return error_of(record.error());
        Json out = {{"id", id},
                    {"sha256", record->value("sha256", "")},
                    {"size", record->value("size", 0)},
                    {"received", search::iso_date(record->value("received", std::int64_t{0}))},
                    {"direction", record->value("direction", "")},
                    {"envelope", {{"mail_from", record->value("from", "")}, {"recipients", record->value("recipients", Json::array())}}},
                    {"outcomes", record->value("outcomes", Json::array())},
                    {"sources", record->value("sources", Json::array())},
                    {"problems", record->value("problems", Json::array())},
                    {"holds", holds_of(call, id)},
                    {"retention", record->value("retention", Json())}};
        auto bytes = context.archive->content(id);
        if (bytes) {
            const search::Content content = search::extract_message(*bytes);
            auto list = [](const std::vector<search::Mailbox>& mailboxes) {
                Json out = Json::array();
                for (const auto& m : mailboxes) out.push_back({{"name", m.name}, {"address", m.address}});
                return out;
            };
            out["headers"] = {{"subject", content.subject},  {"from", list(content.from)},
                              {"to", list(content.to)},        {"cc", list(content.cc)},
                              {"bcc", list(content.bcc)},      {"message_id", content.message_id},
                              {"date", content.date ? Json(search::iso_date(content.date)) : Json()}};
            Json methods = Json::array();
            for (const auto& outcome : out["outcomes"])
                if (outcome.contains("method")) methods.push_back(outcome["method"]);
            out["encryption"] = methods;
        }
        return json_reply(out);
    }

    Reply message_raw(Call& call) {
        if (auto refused = check_message(call)) return *refused;
        const std::string& id = call.captures[0];
        auto bytes = context.archive->get(id, actor_of(call));  // on the chain as an access
        if (!bytes) return error_of(bytes.error());
        auto record = context.archive->metadata(id);
        Reply reply;
        reply.content_type = "message/rfc822";
        reply.body = std::move(*bytes);
        if (record) reply.headers.emplace_back("X-Postvault-SHA256", record->value("sha256", ""));
        reply.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + id + ".eml\"");
        return reply;
    }

    Reply message_text(Call& call) {
        if (auto refused = check_message(call)) return *refused;
        const std::string& id = call.captures[0];
        auto bytes = context.archive->get(id, actor_of(call));
        if (!bytes) return error_of(bytes.error());
        const search::Content content = search::extract_message(*bytes);
        Json attachments = Json::array();
        for (std::size_t i = 0; i < content.attachments.size(); ++i) {
            const auto& a = content.attachments[i];
            Json item = {{"n", i},
                         {"filename", a.filename},
                         {"content_type", a.content_type},
                         {"size", a.size},
                         {"depth", a.depth},
                         {"text", a.text}};
            if (!a.note.empty()) item["note"] = a.note;
            attachments.push_back(std::move(item));
        }
        return json_reply({{"id", id},
                           {"subject", content.subject},
                           {"date", content.date ? Json(search::iso_date(content.date)) : Json()},
                           {"body", content.body},
                           {"truncated", content.truncated},
                           {"attachments", attachments}});
    }

    Reply message_attachment(Call& call) {
        if (auto refused = check_message(call)) return *refused;
        const std::string& id = call.captures[0];
        std::size_t n = 0;
        const std::string& text = call.captures[1];
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (error != std::errc() || end != text.data() + text.size())
            return error_reply(http::status::bad_request, "request.attachment", "the attachment number is a whole number from 0");
        auto bytes = context.archive->get(id, actor_of(call));
        if (!bytes) return error_of(bytes.error());
        auto data = search::attachment_data(*bytes, n);
        if (!data) return error_reply(http::status::not_found, "attachment.not_found", "message " + id + " has no attachment " + text);
        Reply reply;
        reply.content_type = data->entry.content_type.empty() ? "application/octet-stream" : data->entry.content_type;
        std::string name = data->entry.filename.empty() ? id + "-" + text : data->entry.filename;
        // An ASCII fallback and the exact UTF-8 name (RFC 6266, RFC 8187).
        std::string safe, encoded;
        for (unsigned char c : name) {
            safe += (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f) ? '_' : static_cast<char>(c);
            if (std::isalnum(c) || std::strchr("!#$&+-.^_`|~", c)) encoded += static_cast<char>(c);
            else encoded += fmt::format("%{:02X}", c);
        }
        reply.headers.emplace_back("Content-Disposition",
                                   "attachment; filename=\"" + safe + "\"; filename*=UTF-8''" + encoded);
        reply.headers.emplace_back("X-Postvault-SHA256", archive::to_hex(archive::sha256(data->bytes)));
        reply.body = std::move(data->bytes);
        return reply;
    }

    // --- legal holds ------------------------------------------------------------------------
    // How many messages the hold covers now (and whether its query parses).
    Result<std::uint64_t> hold_count(const Call& call, const Hold& hold) {
        auto searcher = lease(call);
        if (!searcher) {
            if (searcher.error().code == "search.not_found") return std::uint64_t{0};
            return searcher.error();
        }
        return searcher->searcher->count(hold_query(hold));
    }

    Reply holds_create(Call& call) {
        const Json& b = call.body;
        if (auto ok = check_fields(b, {"name", "reason", "query", "custodians", "message_ids"}); !ok) return error_of(ok.error());
        Hold hold;
        try {
            hold.name = b.at("name").get<std::string>();
            hold.reason = b.at("reason").get<std::string>();
            if (b.contains("query")) hold.query = b["query"].get<std::string>();
            if (b.contains("custodians")) hold.custodians = b["custodians"].get<std::vector<std::string>>();
            if (b.contains("message_ids")) hold.message_ids = b["message_ids"].get<std::vector<std::string>>();
        } catch (const Json::exception&) {
            return error_reply(http::status::bad_request, "request.field",
                               "name and reason are strings; query a string, custodians and message_ids lists of strings");
        }
        if (!hold.query.empty()) {
            auto counted = hold_count(call, hold);  // a query that does not parse is refused now, not at disposal time
            if (!counted) return error_of(counted.error());
        }
        auto made = holds.create(std::move(hold), actor_of(call));
        if (!made) return error_of(made.error());
        call.subject = made->id;
        Json out = to_json(*made);
        auto counted = hold_count(call, *made);
        out["count"] = counted ? Json(*counted) : Json();
        return json_reply(out, http::status::created);
    }

    Reply holds_list(Call& call) {
        if (auto ok = check_params(call.target.params, {"state"}); !ok) return error_of(ok.error());
        std::string state;
        if (auto it = call.target.params.find("state"); it != call.target.params.end()) state = it->second;
        if (!state.empty() && state != "active" && state != "released")
            return error_reply(http::status::bad_request, "request.parameter", "state is active or released");
        Json out = {{"holds", Json::array()}};
        for (const auto& hold : holds.list())
            if (state.empty() || (state == "active") == (hold.released == 0)) out["holds"].push_back(to_json(hold));
        return json_reply(out);
    }

    Reply holds_get(Call& call) {
        call.subject = call.captures[0];
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        auto hold = holds.get(call.captures[0]);
        if (!hold) return error_of(hold.error());
        Json out = to_json(*hold);
        auto counted = hold_count(call, *hold);
        if (!counted) return error_of(counted.error());
        out["count"] = *counted;
        return json_reply(out);
    }

    Reply holds_release(Call& call) {
        call.subject = call.captures[0];
        std::string reason;
        if (auto ok = check_params(call.target.params, {"reason"}); !ok) return error_of(ok.error());
        if (auto it = call.target.params.find("reason"); it != call.target.params.end()) reason = it->second;
        if (call.body.is_object()) {
            if (auto ok = check_fields(call.body, {"reason"}); !ok) return error_of(ok.error());
            if (call.body.contains("reason") && call.body["reason"].is_string()) reason = call.body["reason"].get<std::string>();
        }
        if (auto released = holds.release(call.captures[0], actor_of(call), reason); !released) return error_of(released.error());
        auto hold = holds.get(call.captures[0]);
        if (!hold) return error_of(hold.error());
        return json_reply(to_json(*hold));
    }

    // The active holds that cover message `id`.
    Json holds_of(const Call& call, const std::string& id) {
        Json out = Json::array();
        auto searcher = lease(call);
        if (!searcher) return out;
        (void)searcher->searcher->restrict_to("");  // holds are not the reviewer's scope
        for (const auto& hold : holds.list()) {
            if (hold.released) continue;
            auto count = searcher->searcher->count("(" + hold_query(hold) + ") AND id:" + id);
            if (count && *count > 0) out.push_back({{"id", hold.id}, {"name", hold.name}});
        }
        return out;
    }

    // --- exports ------------------------------------------------------------------------------
    Reply exports_create(Call& call) {
        const Json& b = call.body;
        if (auto ok = check_fields(b, {"name", "format", "query", "hold_id", "message_ids"}); !ok) return error_of(ok.error());
        ExportRequest request;
        try {
            request.format = b.at("format").get<std::string>();
            if (b.contains("name")) request.name = b["name"].get<std::string>();
            if (b.contains("query")) request.query = b["query"].get<std::string>();
            if (b.contains("hold_id")) request.hold_id = b["hold_id"].get<std::string>();
            if (b.contains("message_ids")) request.message_ids = b["message_ids"].get<std::vector<std::string>>();
        } catch (const Json::exception&) {
            return error_reply(http::status::bad_request, "request.field",
                               "format (string) is required; name, query and hold_id are strings, message_ids a list of strings");
        }
        auto job = exports->start(request, actor_of(call));
        if (!job) return error_of(job.error());
        call.subject = job->value("id", "");
        return json_reply(*job, http::status::accepted);
    }

    Reply exports_list(Call& call) {
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        Json out = {{"exports", Json::array()}};
        for (auto& job : exports->list()) out["exports"].push_back(std::move(job));
        return json_reply(out);
    }

    Reply exports_get(Call& call) {
        call.subject = call.captures[0];
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        auto job = exports->get(call.captures[0]);
        if (!job) return error_of(job.error());
        return json_reply(*job);
    }

    Reply exports_manifest(Call& call) {
        call.subject = call.captures[0];
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        auto manifest = exports->manifest(call.captures[0]);
        if (!manifest) return error_of(manifest.error());
        return json_reply(*manifest);
    }

    // The file, or the one byte range asked for (RFC 9110 14.2: "bytes=a-b", "bytes=a-", "bytes=-n").
    Reply exports_download(Call& call) {
        call.subject = call.captures[0];
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        auto file = exports->file(call.captures[0]);
        if (!file) return error_of(file.error());
        Reply reply;
        reply.content_type = file->content_type;
        reply.file_path = file->path;
        reply.file_offset = 0;
        reply.file_length = file->size;
        reply.headers.emplace_back("Accept-Ranges", "bytes");
        reply.headers.emplace_back("X-Postvault-SHA256", file->sha256);
        reply.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + file->filename + "\"");
        const std::string range(call.request[http::field::range]);
        if (range.empty()) return reply;
        auto unsatisfiable = [&] {
            Reply refused = error_reply(http::status::range_not_satisfiable, "request.range",
                                        "the range is not within the file's " + std::to_string(file->size) + " bytes");
            refused.headers.emplace_back("Content-Range", "bytes */" + std::to_string(file->size));
            return refused;
        };
        if (!range.starts_with("bytes=") || range.find(',') != std::string::npos) return reply;  // ignored: whole file
        const std::string spec = range.substr(6);
        const std::size_t dash = spec.find('-');
        if (dash == std::string::npos) return reply;
        auto number = [](const std::string& text, std::uint64_t& value) {
            if (text.empty()) return false;
            const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
            return error == std::errc() && end == text.data() + text.size();
        };
        std::uint64_t first = 0, last = 0;
        const std::string a = spec.substr(0, dash), b = spec.substr(dash + 1);
        if (a.empty()) {  // the last n bytes
            std::uint64_t n = 0;
            if (!number(b, n)) return reply;
            if (n == 0 || file->size == 0) return unsatisfiable();
            first = n >= file->size ? 0 : file->size - n;
            last = file->size - 1;
        } else {
            if (!number(a, first)) return reply;
            if (b.empty()) last = file->size ? file->size - 1 : 0;
            else if (!number(b, last) || last < first) return reply;
            if (first >= file->size) return unsatisfiable();
            last = std::min(last, file->size - 1);
        }
        reply.status = http::status::partial_content;
        reply.file_offset = first;
        reply.file_length = last - first + 1;
        reply.headers.emplace_back("Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                                                        std::to_string(file->size));
        return reply;
    }

    static std::optional<std::int64_t> time_param(const std::string& text) {
        // ISO 8601 date or date-time in UTC, or Unix seconds.
        std::tm tm{};
        const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
        if (end == nullptr) {
            tm = {};
            end = strptime(text.c_str(), "%Y-%m-%d", &tm);
        }
        if (end != nullptr && (*end == '\0' || (*end == 'Z' && end[1] == '\0'))) return static_cast<std::int64_t>(timegm(&tm));
        std::int64_t seconds = 0;
        const auto [last, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
        if (error == std::errc() && last == text.data() + text.size()) return seconds;
        return std::nullopt;
    }

    Reply audit(Call& call) {
        const Params& p = call.target.params;
        if (auto ok = check_params(p, {"since", "until", "actor", "action", "limit", "cursor"}); !ok) return error_of(ok.error());
        archive::EventFilter filter;
        filter.limit = 100;
        for (auto [name, field] : {std::pair{"since", &filter.since_micros}, std::pair{"until", &filter.until_micros}}) {
            if (auto it = p.find(name); it != p.end()) {
                auto seconds = time_param(it->second);
                if (!seconds) return error_reply(http::status::bad_request, "request.parameter",
                                                 std::string(name) + " must be an ISO 8601 date or date-time (UTC) or Unix seconds");
                *field = *seconds * 1000000;
            }
        }
        if (auto it = p.find("actor"); it != p.end()) filter.actor = it->second;
        if (auto it = p.find("action"); it != p.end()) filter.type = it->second;
        if (auto it = p.find("limit"); it != p.end()) {
            auto limit = limit_of(it->second);
            if (!limit) return error_of(limit.error());
            filter.limit = *limit;
        }
        if (auto it = p.find("cursor"); it != p.end()) {
            const auto [end, error] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), filter.from_seq);
            if (error != std::errc() || end != it->second.data() + it->second.size())
                return error_reply(http::status::bad_request, "request.parameter", "cursor is the next_cursor of an earlier page");
        }
        std::uint64_t next = 0;
        const auto events = context.archive->events(filter, &next);
        Json out = {{"events", Json::array()}, {"next_cursor", next ? Json(std::to_string(next)) : Json()}};
        for (const auto& e : events) {
            Json item = {{"seq", e.seq},
                         {"time", search::iso_date(e.time_micros / 1000000)},
                         {"time_micros", e.time_micros},
                         {"action", e.type},
                         {"subject", e.subject},
                         {"actor", e.actor}};
            if (!e.content.empty()) item["sha256"] = e.content;
            if (!e.detail.empty()) {
                auto detail = Json::parse(e.detail, nullptr, false);
                item["detail"] = detail.is_discarded() ? Json(e.detail) : detail;
            }
            out["events"].push_back(std::move(item));
        }
        return json_reply(out);
    }

    Reply integrity(Call& call) {
        if (auto ok = check_params(call.target.params, {"refresh"}); !ok) return error_of(ok.error());
        bool refresh = false;
        if (auto it = call.target.params.find("refresh"); it != call.target.params.end()) {
            auto flag = flag_of("refresh", it->second);
            if (!flag) return error_of(flag.error());
            refresh = *flag;
        }
        std::lock_guard lock(integrity_mutex);
        const std::int64_t now = std::time(nullptr);
        // A report older than an hour, or none, or a refresh asked for: verify again, in the background.
        if (!integrity_running && (refresh || !integrity_report || now - integrity_finished > 3600)) {
            if (integrity_thread.joinable()) integrity_thread.join();
            integrity_running = true;
            integrity_started = now;
            integrity_thread = std::thread([this] {
                const archive::VerifyReport report = context.archive->verify();
                Json j = {{"ok", report.ok},
                          {"entries", report.entries},
                          {"checkpoints", report.checkpoints},
                          {"messages", report.messages},
                          {"contents_checked", report.contents_checked},
                          {"problems", report.problems},
                          {"notes", report.notes}};
                (void)context.archive->record_event("verify", "", "api", dump(j));
                std::lock_guard lock(integrity_mutex);
                integrity_report = std::move(j);
                integrity_finished = std::time(nullptr);
                integrity_running = false;
            });
        }
        Json out = {{"state", integrity_running ? "running" : "done"},
                    {"started", integrity_started ? Json(search::iso_date(integrity_started)) : Json()},
                    {"finished", integrity_finished ? Json(search::iso_date(integrity_finished)) : Json()},
                    {"report", integrity_report ? *integrity_report : Json()}};
        return json_reply(out, integrity_running ? http::status::accepted : http::status::ok);
    }

    Reply tokens_list(Call& call) {
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        auto tokens = context.tokens->list();
        if (!tokens) return error_of(tokens.error());
        Json out = {{"tokens", Json::array()}};
        for (const auto& token : *tokens) out["tokens"].push_back(to_json(token));
        return json_reply(out);
    }

    Reply tokens_create(Call& call) {
        const Json& b = call.body;
        if (auto ok = check_fields(b, {"name", "role", "expires", "custodians", "domains"}); !ok) return error_of(ok.error());
        std::string name, role_text;
        std::int64_t expires = 0;
        std::vector<std::string> custodians, domains;
        try {
            name = b.at("name").get<std::string>();
            role_text = b.at("role").get<std::string>();
            if (b.contains("expires")) {
                auto seconds = time_param(b["expires"].get<std::string>());
                if (!seconds) return error_reply(http::status::bad_request, "request.field", "expires must be an ISO 8601 date-time (UTC)");
                expires = *seconds;
            }
            if (b.contains("custodians")) custodians = b["custodians"].get<std::vector<std::string>>();
            if (b.contains("domains")) domains = b["domains"].get<std::vector<std::string>>();
        } catch (const Json::exception&) {
            return error_reply(http::status::bad_request, "request.field",
                               "name and role (strings) are required; expires is a date-time, custodians and domains lists of strings");
        }
        auto role = parse_role(role_text);
        if (!role) return error_of(role.error());
        call.subject = name;
        auto made = create_token_on_record(*context.tokens, *context.archive, name, *role, expires, custodians, domains,
                                           actor_of(call));
        if (!made) return error_of(made.error());
        Json out = to_json(made->token);
        out["token"] = made->secret;
        return json_reply(out, http::status::created);
    }

    Reply tokens_revoke(Call& call) {
        call.subject = call.captures[0];
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        if (auto revoked = revoke_token_on_record(*context.tokens, *context.archive, call.captures[0], actor_of(call)); !revoked)
            return error_of(revoked.error());
        return json_reply({{"revoked", call.captures[0]}});
    }

    Reply metrics_text(Call& call) {
        if (auto ok = check_params(call.target.params, {}); !ok) return error_of(ok.error());
        std::string out;
        out += "# HELP postvault_api_request_duration_seconds Audit API request latency by route.\n";
        out += "# TYPE postvault_api_request_duration_seconds histogram\n";
        std::string statuses = "# HELP postvault_api_requests_total Audit API requests by route and status.\n"
                               "# TYPE postvault_api_requests_total counter\n";
        {
            std::lock_guard lock(metrics_mutex);
            for (const auto& [route, m] : metrics) {
                std::uint64_t cumulative = 0;
                for (std::size_t i = 0; i < kBuckets.size(); ++i) {
                    cumulative += m->buckets[i].load();
                    out += fmt::format("postvault_api_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n", route,
                                       kBuckets[i], cumulative);
                }
                out += fmt::format("postvault_api_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n", route,
                                   m->count.load());
                out += fmt::format("postvault_api_request_duration_seconds_sum{{route=\"{}\"}} {:.6f}\n", route,
                                   static_cast<double>(m->micros.load()) / 1e6);
                out += fmt::format("postvault_api_request_duration_seconds_count{{route=\"{}\"}} {}\n", route, m->count.load());
                for (const auto& [status, count] : m->statuses)
                    statuses += fmt::format("postvault_api_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", route, status, count);
            }
        }
        out += statuses;
        out += "# HELP postvault_api_unauthorized_total Audit API requests refused for a missing or bad token.\n"
               "# TYPE postvault_api_unauthorized_total counter\n";
        out += fmt::format("postvault_api_unauthorized_total {}\n", unauthorized.load());
        out += "# HELP postvault_index_lag_messages Archived messages not yet in the search index.\n"
               "# TYPE postvault_index_lag_messages gauge\n";
        out += fmt::format("postvault_index_lag_messages {}\n", context.archive->index_queue_length());
        if (context.gateway_metrics) out += context.gateway_metrics();
        Reply reply;
        reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
        reply.body = std::move(out);
        return reply;
    }

    void observe(const std::string& route, unsigned status, Clock::duration elapsed) {
        const double seconds = std::chrono::duration<double>(elapsed).count();
        std::lock_guard lock(metrics_mutex);
        auto& m = metrics[route];
        if (!m) m = std::make_unique<RouteMetrics>();
        for (std::size_t i = 0; i < kBuckets.size(); ++i)
            if (seconds <= kBuckets[i]) {
                ++m->buckets[i];
                break;
            }
        ++m->count;
        m->micros += static_cast<std::uint64_t>(std::llround(seconds * 1e6));
        ++m->statuses[status];
    }
};

ApiService::ApiService(ApiContext context) : impl_(std::make_unique<Impl>(std::move(context))) {}
ApiService::~ApiService() = default;

std::vector<std::string> ApiService::route_list() {
    std::vector<std::string> out;
    for (const auto& route : Impl::make_routes(0)) out.push_back(std::string(http::to_string(route.method)) + " " + route.pattern);
    return out;
}

std::uint64_t ApiService::body_limit(const Request& header) {
    auto target = parse_target(header.target());
    if (!target) return 0;
    std::vector<std::string> captures;
    bool known = false;
    const Impl::Route* route = impl_->find(header.method(), *target, captures, known);
    // No such route: read a small body anyway, so that the answer is the 404 or 405 it deserves.
    return route ? route->body_limit : std::min<std::uint64_t>(impl_->context.config.api.max_body_size, 64 * 1024);
}

void ApiService::handle(const Request& request, const Client& client, std::function<void(Reply)> done) {
    const auto started = Clock::now();
    Impl& impl = *impl_;
    auto target = parse_target(request.target());
    if (!target) {
        done(error_of(target.error()));
        return;
    }
    std::vector<std::string> captures;
    bool path_known = false;
    const Impl::Route* route = impl.find(request.method(), *target, captures, path_known);
    if (!route) {
        if (path_known) {
            Reply refused = error_reply(http::status::method_not_allowed, "request.method", "method not allowed here");
            std::string allow;
            for (const auto& other : impl.routes) {
                std::vector<std::string> ignored;
                bool known = false;
                if (impl.find(other.method, *target, ignored, known) == &other)
                    allow += (allow.empty() ? "" : ", ") + std::string(http::to_string(other.method));
            }
            refused.headers.emplace_back("Allow", allow);
            done(std::move(refused));
            return;
        }
        done(error_reply(http::status::not_found, "request.route", "no such route"));
        return;
    }
    Call call{request, client, *target, std::move(captures), std::nullopt, Json(), ""};
    // A route that throws answers 500, on the record like any other answer.
    auto run = [&] {
        try {
            return (impl.*(route->run))(call);
        } catch (const std::exception& e) {
            spdlog::error("api: {} {}: {}", std::string(request.method_string()), std::string(request.target()), e.what());
            return error_reply(http::status::internal_server_error, "server.internal", "internal error");
        }
    };
    Reply reply;
    if (route->roles == 0) {
        reply = run();
        impl.observe(route->pattern, static_cast<unsigned>(reply.status), Clock::now() - started);
        done(std::move(reply));
        return;
    }

    // Authentication, role, body; then the route.
    const auto authorization = request[http::field::authorization];
    if (authorization.size() > 7 && (authorization.substr(0, 7) == "Bearer " || authorization.substr(0, 7) == "bearer "))
        call.token = impl.context.tokens->authenticate(authorization.substr(7), std::time(nullptr));
    if (!call.token) {
        ++impl.unauthorized;
        reply = error_reply(http::status::unauthorized, "auth.token", "a valid bearer token is required");
        reply.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"postvault\"");
    } else if (!allowed(route->roles, call.token->role)) {
        reply = error_reply(http::status::forbidden, "auth.role",
                            "role " + std::string(role_name(call.token->role)) + " may not use this route");
    } else if (request.method() == http::verb::post || (request.method() == http::verb::delete_ && !request.body().empty())) {
        const auto type = request[http::field::content_type];
        if (type.substr(0, 16) != "application/json") {
            reply = error_reply(http::status::unsupported_media_type, "request.content_type", "the body must be application/json");
        } else {
            call.body = Json::parse(request.body(), nullptr, false);
            if (call.body.is_discarded() || !call.body.is_object())
                reply = error_reply(http::status::bad_request, "request.json", "the body is not a JSON object");
            else
                reply = run();
        }
    } else {
        reply = run();
    }

    // On the record before it leaves.
    Json detail = {{"method", std::string(request.method_string())},
                   {"target", std::string(request.target())},
                   {"status", static_cast<unsigned>(reply.status)},
                   {"client", client.address}};
    if (call.token) detail["role"] = std::string(role_name(call.token->role));
    if (!request.body().empty() && request.body().size() <= 8192) {
        Json body = call.body.is_null() ? Json::parse(request.body(), nullptr, false) : call.body;
        if (body.is_discarded()) body = request.body();  // not JSON: the text as sent
        if (body.is_object() && body.contains("token")) body.erase("token");
        detail["body"] = body;
    }
    const std::string actor = call.token ? call.token->name : "-";
    // The worker is free while the record waits for its group's fsync; the answer leaves after.
    auto answer = std::make_shared<Reply>(std::move(reply));
    auto on_recorded = [&impl, route, answer, started, done = std::move(done),
                        what = std::string(request.method_string()) + " " + std::string(request.target())](Status status) {
        if (!status) {
            spdlog::error("api: cannot record {} on the archive chain: {}", what, status.error().message);
            *answer = error_reply(http::status::service_unavailable, "audit.unavailable",
                                  "the call cannot be put on the audit record; try again later");
        }
        impl.observe(route->pattern, static_cast<unsigned>(answer->status), Clock::now() - started);
        done(std::move(*answer));
        std::lock_guard lock(impl.recording_mutex);
        if (--impl.recording == 0) impl.recorded.notify_all();
    };
    {
        std::lock_guard lock(impl.recording_mutex);
        ++impl.recording;
    }
    impl.context.archive->record_event("api", call.subject, actor, dump(detail), std::move(on_recorded));
}

}  // namespace postvault::api
