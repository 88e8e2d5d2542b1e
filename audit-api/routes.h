// audit-api/routes.h — the audit API's routes under /api/v1 (docs/openapi.yaml describes them).
//
// ApiService is the HttpServer's Service: it parses the target, finds the route in one table
// (method, path pattern, roles allowed, body limit), authenticates the bearer token, checks
// the role, runs the route and puts the call on the archive's hash chain ("api" entries: actor =
// token name, subject = the message or object concerned, detail = method, target, status,
// role, client and, for POST, the body) before the answer leaves. A call that cannot be
// recorded is answered 503: nothing is served off the record. GET /health has no token
// (and no record: probes call it every few seconds), and neither has the Web Key Directory
// (/.well-known/openpgpkey/..., draft-koch-openpgp-webkey-service): the public keys of the
// organization's own addresses, served to anyone as a web server would.
//
// Reviewer tokens see only mail whose participants or domains are in the token's scope: the
// scope is a filter under every search (search::Searcher::restrict_to), and a message outside
// it answers 404 like one that does not exist.
//
// Errors are {"error":{"code","message"}}: 400 bad input (unknown fields, bad query with its
// column, bad limit), 401 no or bad token, 403 role, 404, 405, 413, 503 (temporary: index or
// archive busy). Thread safety: handle() runs on several worker threads at once.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "archive/archive.h"
#include "audit-api/http_server.h"
#include "audit-api/tokens.h"
#include "common/config.h"

namespace postvault::api {

struct ApiContext {
    Config config;              // api, search and archive sections are used
    archive::Archive* archive = nullptr;  // the server's writer handle
    TokenStore* tokens = nullptr;
    // Prometheus text for the gateway's side (queue depth, delivery counters...), appended
    // to GET /metrics.
    std::function<std::string()> gateway_metrics;
    // The organization's Web Key Directory (GET /.well-known/openpgpkey/...): the domains it
    // serves (the relay's local domains) and their binary keys by domain and WKD hash.
    std::vector<std::string> wkd_domains;
    std::function<Result<std::string>(const std::string& domain, const std::string& hash)> wkd_keys;
};

class ApiService final : public Service {
public:
    explicit ApiService(ApiContext context);
    ~ApiService() override;

    std::uint64_t body_limit(const Request& header) override;
    void handle(const Request& request, const Client& client, std::function<void(Reply)> done) override;

    // Every route as "METHOD /api/v1/path/{param}" (the OpenAPI check compares these).
    static std::vector<std::string> route_list();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace postvault::api
