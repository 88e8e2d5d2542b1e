// audit-api/http_server.h — the HTTPS/1.1 server under the audit API (Boost.Beast).
//
// The shape of Beast's advanced server: a listener, a coroutine per connection on its own
// strand, a timeout before every read and write, a header limit, and a body limit chosen per
// route once the request line is known. TLS only (TLS 1.2+, the context comes from
// smtp::make_server_tls_context). HTTP/1.1 keep-alive.
//
// The Service does the work: body_limit() is asked after the header arrives (0 refuses any
// body: 413), handle() runs on the worker pool (it may block on RocksDB or Xapian) and
// completes with a Reply: a body in memory, or a byte range of a file (downloads), streamed in
// 64 KiB pieces.
//
// Limits and their answers: more than max_connections at once -> 503 and close; a header over
// max_header_size -> 431; a body over the route's limit -> 413; malformed HTTP -> 400; a
// request not complete within read_timeout (slowloris) -> the connection is closed; an idle
// keep-alive connection closes after idle_timeout; each write must progress within
// write_timeout. Error bodies are {"error":{"code","message"}}.
//
// Thread safety: start() and stop() from one thread; handle() is called from the worker pool,
// several at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/beast/http.hpp>

#include "common/asio.h"
#include "common/config.h"
#include "common/result.h"

namespace postvault::api {

namespace http = beast::http;
using Request = http::request<http::string_body>;

struct Reply {
    http::status status = http::status::ok;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // extra header fields
    // A file range instead of `body` (when file_path is set).
    std::string file_path;
    std::uint64_t file_offset = 0;
    std::uint64_t file_length = 0;
};

// {"error":{"code","message"}} with the status.
Reply error_reply(http::status status, const std::string& code, const std::string& message);

struct Client {
    std::string address;  // peer IP
};

class Service {
public:
    virtual ~Service() = default;
    // The largest body this request may carry (after its header arrived).
    virtual std::uint64_t body_limit(const Request& header) = 0;
    // Runs on the worker pool (it may block on RocksDB or Xapian) and calls `done` once with
    // the reply, from any thread: after the request's audit record is durable, which frees
    // the worker while the record waits for its fsync. `request` and `client` stay valid
    // until then. The server answers 500 if handle() throws before calling `done`.
    virtual void handle(const Request& request, const Client& client, std::function<void(Reply)> done) = 0;
};

class HttpServer {
public:
    HttpServer(asio::io_context& io, asio::thread_pool& workers, std::shared_ptr<asio::ssl::context> tls,
               const ApiConfig& config, Service& service);
    ~HttpServer();

    // Binds config.listen; "api.listen" error when it cannot.
    Status start();
    // Stops accepting and closes every connection.
    void stop();
    // The bound port (after start(); useful with port 0).
    unsigned short port() const;

    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace postvault::api
