#include "gateway/smtp/server.h"

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/async.h"
#include "common/log.h"
#include "common/net.h"
#include "gateway/smtp/auth.h"
#include "gateway/smtp/session.h"
#include "gateway/smtp/tls.h"

namespace postvault::smtp {

namespace {

using tcp = asio::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
constexpr std::size_t read_chunk_size = 64 * 1024;

// The parts of a Config one connection needs, built once per (re)load.
struct Settings {
    std::shared_ptr<const Config> config;
    std::shared_ptr<const SessionContext> session_context;
    std::vector<Network> trusted_networks;
};

// Resumes a coroutine after the sink reports the message durable.
template <typename CompletionToken>
auto async_commit(const Server::Sink& sink, std::string id, Envelope envelope, std::string message,
                  CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(Status)>(
        [&sink](auto handler, std::string id, Envelope envelope, std::string message) {
            auto executor = asio::get_associated_executor(handler);
            auto work = asio::make_work_guard(executor);
            auto shared_handler = std::make_shared<decltype(handler)>(std::move(handler));
            sink.commit(id, envelope, std::move(message),
                         [shared_handler, work = std::move(work)](Status status) mutable {
                             auto target = work.get_executor();
                             asio::post(target, [shared_handler, status = std::move(status)]() mutable {
                                 (*shared_handler)(std::move(status));
                             });
                             work.reset();
                         });
        },
        token, std::move(id), std::move(envelope), std::move(message));
}

// Writes `text` through TLS once it is up, else in plain; the error, if any.
asio::awaitable<boost::system::error_code> write_to_client(beast::tcp_stream& plain, TlsStream* tls,
                                                           const std::string& text) {
    boost::system::error_code error;
    if (tls) {
        co_await asio::async_write(*tls, asio::buffer(text), asio::redirect_error(asio::use_awaitable, error));
    } else {
        co_await asio::async_write(plain, asio::buffer(text), asio::redirect_error(asio::use_awaitable, error));
    }
    co_return error;
}

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
    // One live connection, as seen by stop().
    struct Connection {
        asio::strand<asio::io_context::executor_type> strand;
        beast::tcp_stream* lowest_layer = nullptr;  // touched only on `strand`
        bool in_transaction = false;                // DATA/BDAT or commit in progress
        bool reading = false;                       // a client read is pending
        bool timed_out = false;                     // that read hit its timeout
        std::uint64_t read_serial = 0;              // tells a stale timer expiry from a live one
        explicit Connection(asio::strand<asio::io_context::executor_type> s) : strand(std::move(s)) {}
    };

    asio::io_context& io;
    asio::thread_pool& workers;
    Sink sink;
    Role role;
    std::shared_ptr<asio::ssl::context> tls_context;
    std::vector<std::unique_ptr<tcp::acceptor>> acceptors;

    mutable std::mutex mutex;  // guards everything below
    std::shared_ptr<const Settings> settings;
    std::map<std::string, std::size_t> connections_per_ip;
    std::size_t connection_count = 0;
    std::set<std::shared_ptr<Connection>> connections;
    bool stopping = false;
    // Message bytes held by all sessions together (smtp.max_buffered_bytes).
    std::atomic<std::uint64_t> buffered_bytes{0};

    Impl(asio::io_context& io_context, asio::thread_pool& pool, Sink s, Role r)
        : io(io_context), workers(pool), sink(std::move(s)), role(r) {}

    std::shared_ptr<const Settings> make_settings(std::shared_ptr<const Config> config) {
        auto result = std::make_shared<Settings>();
        auto context = std::make_shared<SessionContext>();
        context->hostname = config->server.hostname;
        context->limits = config->smtp;
        context->limits.users.clear();
        context->tls_available = tls_context != nullptr;
        context->auth_available = !config->smtp.users.empty();
        context->disk_has_room = sink.has_room;
        context->new_queue_id = [] { return make_message_id(); };
        // A journal listener relays nothing and serves no local mailboxes: every
        // recipient needs a trusted network or AUTH, like a relay recipient.
        auto domains = std::make_shared<std::set<std::string>>();
        if (role == Role::relay)
            domains->insert(config->smtp.local_domains.begin(), config->smtp.local_domains.end());
        context->is_local_domain = [domains](const std::string& domain) { return domains->count(domain) > 0; };
        if (role == Role::relay) context->refuse_recipient = sink.refuse_recipient;
        if (!config->smtp.local_domains.empty()) context->postmaster_domain = config->smtp.local_domains.front();
        for (const auto& text : config->smtp.trusted_networks) {
            if (auto network = Network::parse(text)) result->trusted_networks.push_back(*network);
        }
        result->config = std::move(config);
        result->session_context = std::move(context);
        return result;
    }

    std::shared_ptr<const Settings> current_settings() const {
        std::lock_guard lock(mutex);
        return settings;
    }

    Status listen() {
        auto current = current_settings();
        const auto& addresses =
            role == Role::relay ? current->config->smtp.listen : current->config->archive.journal_listen;
        for (const auto& text : addresses) {
            auto endpoint_text = parse_host_port(text);
            if (!endpoint_text) return endpoint_text.error();
            boost::system::error_code error;
            auto address = asio::ip::make_address(endpoint_text->host, error);
            if (error) {
                return Error::permanent("smtp.listen", "'" + text + "': listen address must be an IP address");
            }
            auto acceptor = std::make_unique<tcp::acceptor>(io);
            tcp::endpoint endpoint(address, endpoint_text->port);
            acceptor->open(endpoint.protocol(), error);
            if (!error) acceptor->set_option(tcp::acceptor::reuse_address(true), error);
            if (!error) acceptor->bind(endpoint, error);
            if (!error) acceptor->listen(asio::socket_base::max_listen_connections, error);
            if (error) {
                return Error::permanent("smtp.listen", "cannot listen on " + text + ": " + error.message());
            }
            spdlog::info("smtp: listening on {}", text);
            acceptors.push_back(std::move(acceptor));
        }
        for (auto& acceptor : acceptors) {
            asio::co_spawn(io, accept_loop(*acceptor), asio::detached);
        }
        return Status::success();
    }

    asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
        auto self = shared_from_this();
        for (;;) {
            auto strand = asio::make_strand(io);
            tcp::socket socket(strand);
            boost::system::error_code error;
            co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, error));
            if (error == asio::error::operation_aborted || !acceptor.is_open()) co_return;
            if (error) {
                spdlog::warn("smtp: accept failed: {}", error.message());
                // Out of descriptors and the like: pause instead of spinning.
                asio::steady_timer pause(io, std::chrono::milliseconds(100));
                co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, error));
                continue;
            }
            asio::co_spawn(strand, run_connection(std::move(socket), strand), asio::detached);
        }
    }

    // Registers the connection; returns a refusal reason when a limit is hit.
    std::string admit(const std::shared_ptr<Connection>& connection, const std::string& ip, const Settings& current) {
        std::lock_guard lock(mutex);
        ++connection_count;
        auto& per_ip = connections_per_ip[ip];
        ++per_ip;
        connections.insert(connection);
        if (stopping) return "Service shutting down";
        if (connection_count > current.config->smtp.max_connections) return "Too many connections, try again later";
        if (per_ip > current.config->smtp.max_connections_per_ip) {
            return "Too many connections from your address, try again later";
        }
        return {};
    }

    void release(const std::shared_ptr<Connection>& connection, const std::string& ip) {
        std::lock_guard lock(mutex);
        --connection_count;
        if (--connections_per_ip[ip] == 0) connections_per_ip.erase(ip);
        connections.erase(connection);
    }

    // Brings this session's share of the global message-byte count up to date;
    // false when the total is over smtp.max_buffered_bytes while this session is
    // receiving a message (it is then the one to refuse: nothing of its message
    // has been acknowledged, so closing with 421 loses nothing).
    bool account_buffered(Session& session, std::uint64_t& accounted, const SmtpConfig& limits) {
        // The buffer is empty outside a transaction and after a commit (its
        // bytes moved to the queue); between BDAT chunks it still counts.
        std::uint64_t now = session.message().size();
        buffered_bytes += now - accounted;  // unsigned wrap-around adds a negative delta correctly
        accounted = now;
        return !(session.in_data() && buffered_bytes.load() > limits.max_buffered_bytes);
    }

    bool is_stopping() const {
        std::lock_guard lock(mutex);
        return stopping;
    }

    asio::awaitable<void> run_connection(tcp::socket socket, asio::strand<asio::io_context::executor_type> strand) {
        auto self = shared_from_this();
        auto current = current_settings();
        const SmtpConfig& limits = current->config->smtp;

        SessionFacts facts;
        boost::system::error_code endpoint_error;
        auto remote = socket.remote_endpoint(endpoint_error);
        if (endpoint_error) co_return;
        auto remote_address = remote.address();
        if (remote_address.is_v6() && remote_address.to_v6().is_v4_mapped()) {
            remote_address = asio::ip::make_address_v4(asio::ip::v4_mapped, remote_address.to_v6());
        }
        facts.client_ip = remote_address.to_string();
        facts.client_port = remote.port();
        facts.trusted = in_networks(current->trusted_networks, facts.client_ip);
        const std::string client = facts.client_ip + ":" + std::to_string(facts.client_port);

        auto connection = std::make_shared<Connection>(strand);
        std::string refusal = admit(connection, facts.client_ip, *current);
        spdlog::info("smtp: connect from {} trusted={}{}", client, facts.trusted,
                     refusal.empty() ? "" : " refused=\"" + refusal + "\"");

        beast::tcp_stream plain(std::move(socket));
        std::unique_ptr<TlsStream> tls;
        connection->lowest_layer = &plain;
        Session session(current->session_context, std::move(facts));
        session.start(refusal);
        std::vector<char> buffer(read_chunk_size);
        asio::steady_timer read_timer(strand);
        std::uint64_t accounted = 0;  // this session's share of buffered_bytes

        try {
            for (;;) {
                std::string output = session.take_output();
                if (!output.empty()) {
                    connection->lowest_layer->expires_after(limits.command_timeout);
                    if (co_await write_to_client(plain, tls.get(), output)) break;
                }

                Action action = session.pending_action();
                if (action == Action::close) break;
                if (action == Action::commit) {
                    connection->in_transaction = true;
                    std::string id = session.queue_id();
                    const Envelope& envelope = session.envelope();
                    std::size_t size = session.message().size();
                    Status status = co_await async_commit(sink, id, envelope, std::move(session.message()),
                                                          asio::use_awaitable);
                    connection->in_transaction = false;
                    if (status) {
                        spdlog::info("qid={} smtp: accepted from=<{}> nrcpt={} size={} client={}{}", id,
                                     envelope.mail_from, envelope.recipients.size(), size, client,
                                     envelope.session.tls_version.empty()
                                         ? ""
                                         : " tls=" + envelope.session.tls_version);
                    } else {
                        spdlog::warn("qid={} smtp: not accepted client={} error={}: {}", id, client,
                                     status.error().code, status.error().message);
                    }
                    session.commit_done(status);
                    account_buffered(session, accounted, limits);
                    if (status && sink.committed) sink.committed(id);
                    continue;
                }
                if (action == Action::verify_auth) {
                    AuthRequest request = session.auth_request();
                    auto users = current->config->smtp.users;
                    // Named, not a temporary: GCC 12 destroys a lambda temporary in a
                    // co_await expression twice (see docs/architecture.md).
                    auto check_password = [&] { return verify_password(users, request.user, request.password); };
                    bool accepted = co_await run_blocking(workers, std::move(check_password));
                    spdlog::info("smtp: auth {} user={} mechanism={} client={}", accepted ? "ok" : "failed",
                                 printable(request.user), request.mechanism, client);
                    session.auth_done(accepted);
                    continue;
                }
                if (action == Action::start_tls) {
                    if (!tls_context) break;  // the session never offers it without a context
                    tls = std::make_unique<TlsStream>(std::move(plain), *tls_context);
                    connection->lowest_layer = &beast::get_lowest_layer(*tls);
                    connection->lowest_layer->expires_after(limits.command_timeout);
                    boost::system::error_code error;
                    co_await tls->async_handshake(asio::ssl::stream_base::server,
                                                  asio::redirect_error(asio::use_awaitable, error));
                    if (error) {
                        spdlog::info("smtp: TLS handshake failed client={}: {}", client, error.message());
                        break;
                    }
                    SSL* handle = tls->native_handle();
                    session.tls_started(SSL_get_version(handle), SSL_get_cipher_name(handle));
                    continue;
                }

                if (is_stopping() && !session.in_data()) {
                    session.shutdown();
                    continue;
                }
                connection->in_transaction = session.in_data();
                // The read timeout cancels the read instead of closing the socket
                // (as beast's own timeout would), so the 421 can still be sent.
                connection->lowest_layer->expires_never();
                const std::uint64_t read_serial = ++connection->read_serial;
                connection->reading = true;
                connection->timed_out = false;
                read_timer.expires_after(session.in_data() ? limits.data_timeout : limits.command_timeout);
                read_timer.async_wait([read_serial, connection](const boost::system::error_code& wait_error) {
                    // A stale expiry (its read already completed) must not touch the next read.
                    if (wait_error || !connection->reading || connection->read_serial != read_serial) return;
                    if (!connection->lowest_layer) return;
                    connection->timed_out = true;
                    boost::system::error_code ignored;
                    connection->lowest_layer->socket().cancel(ignored);
                });
                boost::system::error_code error;
                std::size_t received = 0;
                if (tls) {
                    received = co_await tls->async_read_some(asio::buffer(buffer),
                                                             asio::redirect_error(asio::use_awaitable, error));
                } else {
                    received = co_await plain.async_read_some(asio::buffer(buffer),
                                                              asio::redirect_error(asio::use_awaitable, error));
                }
                connection->reading = false;
                read_timer.cancel();
                if (connection->timed_out) {
                    spdlog::info("smtp: timeout client={} in_data={}", client, session.in_data());
                    session.timeout();
                    continue;
                }
                if (error == asio::error::operation_aborted && is_stopping()) {
                    session.shutdown();
                    continue;
                }
                if (error) break;
                session.receive(std::string_view(buffer.data(), received));
                if (!account_buffered(session, accounted, limits)) {
                    spdlog::warn("smtp: all sessions together hold more than {} message bytes; closing client={}",
                                 limits.max_buffered_bytes, client);
                    std::string refusal = "421 4.3.1 " + current->config->server.hostname +
                                          " Insufficient system resources, try again later\r\n";
                    connection->lowest_layer->expires_after(limits.command_timeout);
                    co_await write_to_client(plain, tls.get(), refusal);
                    break;
                }
            }
        } catch (const std::exception& exception) {
            spdlog::error("smtp: session error client={}: {}", client, exception.what());
        }

        connection->lowest_layer = nullptr;
        beast::tcp_stream& lowest = tls ? beast::get_lowest_layer(*tls) : plain;
        boost::system::error_code ignored;
        lowest.socket().shutdown(tcp::socket::shutdown_both, ignored);
        lowest.socket().close(ignored);
        buffered_bytes -= accounted;
        release(connection, session.facts().client_ip);
        spdlog::info("smtp: disconnect from {}", client);
    }

    void stop(std::chrono::seconds grace, std::function<void()> done) {
        std::vector<std::shared_ptr<Connection>> live;
        {
            std::lock_guard lock(mutex);
            stopping = true;
            live.assign(connections.begin(), connections.end());
        }
        for (auto& acceptor : acceptors) {
            asio::post(acceptor->get_executor(), [acceptor = acceptor.get()] {
                boost::system::error_code ignored;
                acceptor->close(ignored);
            });
        }
        // Idle sessions: interrupt the read so they answer 421 and close.
        for (auto& connection : live) {
            asio::post(connection->strand, [connection] {
                if (connection->lowest_layer && !connection->in_transaction) connection->lowest_layer->cancel();
            });
        }
        auto deadline = std::chrono::steady_clock::now() + grace;
        asio::co_spawn(io, wait_for_sessions(deadline, std::move(done)), asio::detached);
    }

    asio::awaitable<void> wait_for_sessions(std::chrono::steady_clock::time_point deadline,
                                            std::function<void()> done) {
        auto self = shared_from_this();
        asio::steady_timer timer(io);
        for (;;) {
            std::vector<std::shared_ptr<Connection>> live;
            {
                std::lock_guard lock(mutex);
                live.assign(connections.begin(), connections.end());
            }
            if (live.empty()) break;
            if (std::chrono::steady_clock::now() >= deadline) {
                spdlog::warn("smtp: closing {} sessions still open after the grace period", live.size());
                for (auto& connection : live) {
                    asio::post(connection->strand, [connection] {
                        if (connection->lowest_layer) connection->lowest_layer->close();
                    });
                }
                deadline = std::chrono::steady_clock::time_point::max();
            }
            timer.expires_after(std::chrono::milliseconds(50));
            boost::system::error_code ignored;
            co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        }
        if (done) done();
    }
};

Server::Server(asio::io_context& io, asio::thread_pool& workers, Sink sink, std::shared_ptr<const Config> config,
               Role role)
    : impl_(std::make_shared<Impl>(io, workers, std::move(sink), role)) {
    impl_->settings = impl_->make_settings(std::move(config));
}

Server::~Server() = default;

Status Server::start() {
    auto current = impl_->current_settings();
    if (!current->config->tls.cert.empty()) {
        auto context = make_server_tls_context(current->config->tls);
        if (!context) return context.error();
        impl_->tls_context = *context;
        // Settings were built before the context existed: rebuild them.
        auto rebuilt = impl_->make_settings(current->config);
        std::lock_guard lock(impl_->mutex);
        impl_->settings = rebuilt;
    }
    return impl_->listen();
}

void Server::reload(std::shared_ptr<const Config> config) {
    auto rebuilt = impl_->make_settings(std::move(config));
    std::lock_guard lock(impl_->mutex);
    impl_->settings = rebuilt;
}

void Server::stop(std::chrono::seconds grace, std::function<void()> done) { impl_->stop(grace, std::move(done)); }

std::size_t Server::active_sessions() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->connection_count;
}

}  // namespace postvault::smtp
