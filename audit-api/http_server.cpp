// audit-api/http_server.cpp — see http_server.h.
#include "audit-api/http_server.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/async.h"
#include "common/net.h"

namespace postvault::api {

namespace {

using tcp = asio::ip::tcp;
using Stream = beast::ssl_stream<beast::tcp_stream>;
using Strand = asio::strand<asio::io_context::executor_type>;
constexpr std::size_t kFileChunk = 64 * 1024;
constexpr std::size_t kMaxDrain = 16 * 1024 * 1024;  // bytes read and dropped after a 413

http::response<http::string_body> make_response(const Reply& reply, unsigned version, bool keep_alive) {
    http::response<http::string_body> response{reply.status, version};
    response.set(http::field::server, "postvault");
    response.set(http::field::content_type, reply.content_type);
    response.set(http::field::cache_control, "no-store");
    response.set("X-Content-Type-Options", "nosniff");
    for (const auto& [name, value] : reply.headers) response.set(name, value);
    response.keep_alive(keep_alive);
    response.body() = reply.body;
    response.prepare_payload();
    return response;
}

// Why reading a request failed, as the reply (empty body: just close).
std::optional<Reply> read_failure_reply(const boost::system::error_code& error) {
    if (error == http::error::header_limit)
        return error_reply(http::status::request_header_fields_too_large, "request.header_too_large",
                           "the request header is larger than the server accepts");
    if (error == http::error::body_limit)
        return error_reply(http::status::payload_too_large, "request.body_too_large",
                           "the request body is larger than this route accepts");
    if (error == beast::error::timeout || error == http::error::end_of_stream || error == asio::error::eof ||
        error == asio::error::operation_aborted || error == asio::ssl::error::stream_truncated ||
        error == asio::error::connection_reset)
        return std::nullopt;
    if (error.category() == make_error_code(http::error::bad_method).category())
        return error_reply(http::status::bad_request, "request.malformed", "malformed HTTP request: " + error.message());
    return std::nullopt;
}

}  // namespace

Reply error_reply(http::status status, const std::string& code, const std::string& message) {
    Reply reply;
    reply.status = status;
    reply.body = nlohmann::json{{"error", {{"code", code}, {"message", message}}}}.dump(
                     -1, ' ', false, nlohmann::json::error_handler_t::replace) +
                 "\n";
    return reply;
}

struct HttpServer::Impl : std::enable_shared_from_this<Impl> {
    asio::io_context& io;
    asio::thread_pool& workers;
    std::shared_ptr<asio::ssl::context> tls;
    ApiConfig config;
    Service& service;
    std::unique_ptr<tcp::acceptor> acceptor;
    std::atomic<unsigned short> bound_port{0};
    std::mutex mutex;
    std::size_t connections = 0;
    std::set<std::shared_ptr<Stream>> streams;  // to close them at stop()
    bool stopping = false;

    Impl(asio::io_context& io, asio::thread_pool& workers, std::shared_ptr<asio::ssl::context> tls,
         const ApiConfig& config, Service& service)
        : io(io), workers(workers), tls(std::move(tls)), config(config), service(service) {}

    asio::awaitable<void> accept_loop() {
        auto self = shared_from_this();
        for (;;) {
            auto strand = asio::make_strand(io);
            tcp::socket socket(strand);
            boost::system::error_code error;
            co_await acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, error));
            if (error == asio::error::operation_aborted || !acceptor->is_open()) co_return;
            if (error) {
                spdlog::warn("api: accept failed: {}", error.message());
                asio::steady_timer pause(io, std::chrono::milliseconds(100));
                co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, error));
                continue;
            }
            asio::co_spawn(strand, run_connection(std::move(socket)), asio::detached);
        }
    }

    // Writes `reply` (body or file range); false when the connection is gone.
    asio::awaitable<bool> write_reply(Stream& stream, const Reply& reply, unsigned version, bool keep_alive) {
        boost::system::error_code error;
        beast::get_lowest_layer(stream).expires_after(config.write_timeout);
        if (reply.file_path.empty()) {
            auto response = make_response(reply, version, keep_alive);
            co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, error));
            co_return !error;
        }
        const int fd = ::open(reply.file_path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            auto response = make_response(error_reply(http::status::internal_server_error, "export.io",
                                                      "the file cannot be read"),
                                          version, false);
            co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, error));
            co_return false;
        }
        struct Close {
            int fd;
            ~Close() { ::close(fd); }
        } close_file{fd};
        http::response<http::empty_body> header{reply.status, version};
        header.set(http::field::server, "postvault");
        header.set(http::field::content_type, reply.content_type);
        header.set(http::field::cache_control, "no-store");
        for (const auto& [name, value] : reply.headers) header.set(name, value);
        header.set(http::field::content_length, std::to_string(reply.file_length));
        header.keep_alive(keep_alive);
        http::response_serializer<http::empty_body> serializer{header};
        serializer.split(true);
        co_await http::async_write_header(stream, serializer, asio::redirect_error(asio::use_awaitable, error));
        if (error) co_return false;
        std::string chunk(kFileChunk, '\0');
        std::uint64_t offset = reply.file_offset;
        std::uint64_t left = reply.file_length;
        while (left > 0) {
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk.size()));
            const ssize_t got = ::pread(fd, chunk.data(), want, static_cast<off_t>(offset));
            if (got <= 0) co_return false;  // the length was promised: close rather than lie
            beast::get_lowest_layer(stream).expires_after(config.write_timeout);
            co_await asio::async_write(stream, asio::buffer(chunk.data(), static_cast<std::size_t>(got)),
                                       asio::redirect_error(asio::use_awaitable, error));
            if (error) co_return false;
            offset += static_cast<std::uint64_t>(got);
            left -= static_cast<std::uint64_t>(got);
        }
        co_return true;
    }

    asio::awaitable<void> run_connection(tcp::socket socket) {
        auto self = shared_from_this();
        Client client;
        {
            boost::system::error_code ignored;
            client.address = socket.remote_endpoint(ignored).address().to_string();
        }
        auto stream = std::make_shared<Stream>(std::move(socket), *tls);
        bool over_limit = false;
        {
            std::lock_guard lock(mutex);
            if (stopping) co_return;
            over_limit = connections >= config.max_connections;
            ++connections;
            streams.insert(stream);
        }
        struct Release {
            Impl& impl;
            std::shared_ptr<Stream> stream;
            ~Release() {
                std::lock_guard lock(impl.mutex);
                --impl.connections;
                impl.streams.erase(stream);
            }
        } release{*this, stream};

        boost::system::error_code error;
        beast::get_lowest_layer(*stream).expires_after(config.read_timeout);
        co_await stream->async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, error));
        if (error) co_return;
        if (over_limit) {
            co_await write_reply(*stream,
                                 error_reply(http::status::service_unavailable, "server.busy",
                                             "too many connections; try again later"),
                                 11, false);
            co_await shutdown(*stream);
            co_return;
        }

        beast::flat_buffer buffer;
        bool first = true;
        for (;;) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(static_cast<std::uint32_t>(config.max_header_size));
            // Beast checks a declared Content-Length against the limit as the header ends: the
            // largest any route takes first, the route's own once the target is known.
            parser.body_limit(config.max_body_size);
            beast::get_lowest_layer(*stream).expires_after(first ? config.read_timeout : config.idle_timeout);
            first = false;
            co_await http::async_read_header(*stream, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
            if (!error && !parser.is_done()) {
                const std::uint64_t limit = service.body_limit(parser.get());
                if (parser.content_length() && *parser.content_length() > limit) {
                    error = http::error::body_limit;
                } else {
                    parser.body_limit(limit);
                    beast::get_lowest_layer(*stream).expires_after(config.read_timeout);
                    co_await http::async_read(*stream, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
                }
            }
            if (error) {
                if (auto reply = read_failure_reply(error)) {
                    co_await write_reply(*stream, *reply, 11, false);
                    // A client that sends its whole body before reading would get a reset, and
                    // lose the 413, if we closed with its bytes unread (RFC 9112 9.6).
                    if (error == http::error::body_limit) co_await drain(*stream);
                }
                break;
            }
            Request request = parser.release();
            const bool keep_alive = request.keep_alive();
            const unsigned version = request.version();
            auto initiation = [this, &request, &client](auto handler) {
                std::shared_ptr<PendingCompletion<Reply>> pending = make_pending_completion<Reply>(std::move(handler));
                asio::post(workers, [this, &request, &client, pending] {
                    auto answered = std::make_shared<std::atomic<bool>>(false);
                    auto done = [pending, answered](Reply reply) {
                        if (!answered->exchange(true)) pending->complete(std::move(reply));
                    };
                    try {
                        service.handle(request, client, done);
                    } catch (const std::exception& e) {
                        spdlog::error("api: {} {}: {}", std::string(request.method_string()),
                                      std::string(request.target()), e.what());
                        done(error_reply(http::status::internal_server_error, "server.internal", "internal error"));
                    }
                });
            };
            Reply reply =
                co_await asio::async_initiate<decltype(asio::use_awaitable), void(Reply)>(initiation, asio::use_awaitable);
            const bool written = co_await write_reply(*stream, reply, version, keep_alive);
            if (!written || !keep_alive) break;
            {
                std::lock_guard lock(mutex);
                if (stopping) break;
            }
        }
        co_await shutdown(*stream);
    }

    // Reads and drops what the client still sends, for at most 2 s and kMaxDrain bytes.
    asio::awaitable<void> drain(Stream& stream) {
        std::array<char, 16384> sink;
        std::size_t total = 0;
        boost::system::error_code error;
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
        while (total < kMaxDrain) {
            const std::size_t got =
                co_await stream.async_read_some(asio::buffer(sink), asio::redirect_error(asio::use_awaitable, error));
            if (error) break;
            total += got;
        }
    }

    asio::awaitable<void> shutdown(Stream& stream) {
        boost::system::error_code error;
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
        co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, error));
        beast::get_lowest_layer(stream).close();
    }
};

HttpServer::HttpServer(asio::io_context& io, asio::thread_pool& workers, std::shared_ptr<asio::ssl::context> tls,
                       const ApiConfig& config, Service& service)
    : impl_(std::make_shared<Impl>(io, workers, std::move(tls), config, service)) {}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
    auto endpoint_text = parse_host_port(impl_->config.listen);
    if (!endpoint_text) return Error::permanent("api.listen", endpoint_text.error().message);
    boost::system::error_code error;
    auto address = asio::ip::make_address(endpoint_text->host, error);
    if (error) return Error::permanent("api.listen", "'" + impl_->config.listen + "': the address must be an IP address");
    auto acceptor = std::make_unique<tcp::acceptor>(impl_->io);
    tcp::endpoint endpoint(address, endpoint_text->port);
    acceptor->open(endpoint.protocol(), error);
    if (!error) acceptor->set_option(tcp::acceptor::reuse_address(true), error);
    if (!error) acceptor->bind(endpoint, error);
    if (!error) acceptor->listen(asio::socket_base::max_listen_connections, error);
    if (error) return Error::permanent("api.listen", "cannot listen on " + impl_->config.listen + ": " + error.message());
    impl_->bound_port = acceptor->local_endpoint().port();
    impl_->acceptor = std::move(acceptor);
    spdlog::info("api: listening on https://{}", impl_->config.listen);
    asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
    return Status::success();
}

void HttpServer::stop() {
    std::set<std::shared_ptr<Stream>> open;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->stopping) return;
        impl_->stopping = true;
        open = impl_->streams;
    }
    if (impl_->acceptor) {
        asio::post(impl_->acceptor->get_executor(), [impl = impl_] {
            boost::system::error_code ignored;
            impl->acceptor->close(ignored);
        });
    }
    for (const auto& stream : open) {
        asio::post(beast::get_lowest_layer(*stream).get_executor(), [stream] {
            beast::get_lowest_layer(*stream).cancel();
        });
    }
}

unsigned short HttpServer::port() const { return impl_->bound_port; }

}  // namespace postvault::api
