// gateway/delivery/smtp_client.cpp — see smtp_client.h.
#include "gateway/delivery/smtp_client.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>

#include <spdlog/spdlog.h>

namespace postvault::delivery {

namespace {

// How much of the body one write may take before its timeout is renewed.
constexpr std::size_t kWriteChunk = 64 * 1024;
// QUIT is a courtesy: never wait long for its reply.
constexpr Seconds kQuitTimeout{10};

bool is_ip_literal(const std::string& host) {
    boost::system::error_code error;
    asio::ip::make_address(host, error);
    return !error;
}

Outcome outcome_of(const Reply& reply) {
    if (reply.positive()) return Outcome::delivered;
    if (reply.permanent()) return Outcome::bounced;
    return Outcome::deferred;
}

}  // namespace

TlsClientContext::TlsClientContext(const std::string& ca_file) : context_(asio::ssl::context::tls_client) {
    SSL_CTX_set_min_proto_version(context_.native_handle(), TLS1_2_VERSION);
    context_.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
    SSL_CTX_set_options(context_.native_handle(), SSL_OP_NO_RENEGOTIATION);
    boost::system::error_code error;
    context_.set_default_verify_paths(error);
    if (error) problem_ = "cannot load the system CA certificates: " + error.message();
    if (!ca_file.empty()) {
        context_.load_verify_file(ca_file, error);
        if (error) problem_ = "cannot load delivery.ca_file " + ca_file + ": " + error.message();
    }
}

std::string dot_stuff(std::string_view message) {
    std::string out;
    out.reserve(message.size() + message.size() / 50 + 8);
    bool line_start = true;
    for (std::size_t i = 0; i < message.size(); ++i) {
        const char c = message[i];
        if (c == '\r' || c == '\n') {
            // CRLF, bare CR and bare LF all end a line.
            if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
            out += "\r\n";
            line_start = true;
            continue;
        }
        if (line_start && c == '.') out += '.';
        out += c;
        line_start = false;
    }
    if (!line_start) out += "\r\n";
    out += ".\r\n";
    return out;
}

std::string mail_from_command(const Transaction& transaction, const Capabilities& capabilities) {
    std::string line = "MAIL FROM:<" + transaction.mail_from + ">";
    if (capabilities.size && transaction.message != nullptr)
        line += " SIZE=" + std::to_string(transaction.message->size());
    if (transaction.body_8bit && capabilities.eightbitmime) line += " BODY=8BITMIME";
    if (transaction.smtputf8 && capabilities.smtputf8) line += " SMTPUTF8";
    line += "\r\n";
    return line;
}

SmtpConnection::SmtpConnection(asio::any_io_executor executor, std::string host, std::string address,
                               std::uint16_t port, SessionOptions options)
    : host_(std::move(host)),
      address_(std::move(address)),
      port_(port),
      options_(std::move(options)) {
    remote_ = host_ + "[" + address_ + "]:" + std::to_string(port_);
    plain_.emplace(executor);
}

SmtpConnection::~SmtpConnection() { close(); }

beast::tcp_stream& SmtpConnection::lowest() {
    if (tls_) return beast::get_lowest_layer(*tls_);
    return *plain_;
}

void SmtpConnection::close() {
    if (!tls_ && !plain_) return;
    beast::error_code ignored;
    lowest().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    lowest().close();
}

Error SmtpConnection::io_error(const beast::error_code& error, std::string_view during) const {
    if (error == beast::error::timeout)
        return Error::temporary("delivery.timeout", "4.4.2 conversation with " + remote_ + " timed out while " +
                                                        std::string(during));
    return Error::temporary("delivery.io", "4.4.2 lost connection with " + remote_ + " while " +
                                               std::string(during) + " (" + error.message() + ")");
}

asio::awaitable<Status> SmtpConnection::write(std::string_view data, Seconds timeout) {
    std::size_t position = 0;
    while (position < data.size()) {
        const std::size_t length = std::min(kWriteChunk, data.size() - position);
        lowest().expires_after(timeout);
        beast::error_code error;
        if (tls_)
            co_await asio::async_write(*tls_, asio::buffer(data.data() + position, length),
                                       asio::redirect_error(asio::use_awaitable, error));
        else
            co_await asio::async_write(*plain_, asio::buffer(data.data() + position, length),
                                       asio::redirect_error(asio::use_awaitable, error));
        if (error) co_return io_error(error, "writing");
        position += length;
    }
    co_return Status::success();
}

asio::awaitable<Result<Reply>> SmtpConnection::read_reply(Seconds timeout) {
    std::array<char, 4096> chunk;
    while (true) {
        auto taken = take_reply(input_);
        if (!taken) co_return taken.error();
        if (taken->has_value()) co_return std::move(**taken);
        lowest().expires_after(timeout);
        beast::error_code error;
        std::size_t length = 0;
        if (tls_)
            length = co_await tls_->async_read_some(asio::buffer(chunk),
                                                    asio::redirect_error(asio::use_awaitable, error));
        else
            length = co_await plain_->async_read_some(asio::buffer(chunk),
                                                      asio::redirect_error(asio::use_awaitable, error));
        if (error) co_return io_error(error, "reading a reply");
        input_.append(chunk.data(), length);
    }
}

asio::awaitable<Result<Reply>> SmtpConnection::command(std::string line, Seconds timeout) {
    Status written = co_await write(line, timeout);
    if (!written) co_return written.error();
    co_return co_await read_reply(timeout);
}

asio::awaitable<Result<SmtpConnection::Pointer>> SmtpConnection::open(asio::any_io_executor executor,
                                                                      std::string host, std::string address,
                                                                      std::uint16_t port, SessionOptions options) {
    boost::system::error_code parse_error;
    const asio::ip::address ip = asio::ip::make_address(address, parse_error);
    if (parse_error)
        co_return Error::temporary("delivery.connect", "4.4.1 bad address " + address + " for " + host);
    Pointer connection(new SmtpConnection(executor, std::move(host), std::move(address), port, std::move(options)));
    SmtpConnection& self = *connection;

    self.plain_->expires_after(self.options_.connect_timeout);
    beast::error_code error;
    co_await self.plain_->async_connect(asio::ip::tcp::endpoint(ip, port),
                                        asio::redirect_error(asio::use_awaitable, error));
    if (error) {
        const std::string reason = error == beast::error::timeout ? "Connection timed out" : error.message();
        co_return Error::temporary("delivery.connect", "4.4.1 connect to " + self.remote_ + ": " + reason);
    }
    Status ready = co_await self.handshake();
    if (!ready) {
        self.close();
        co_return ready.error();
    }
    co_return connection;
}

asio::awaitable<Status> SmtpConnection::handshake() {
    auto greeting = co_await read_reply(options_.command_timeout);
    if (!greeting) co_return greeting.error();
    if (!greeting->positive()) {
        const std::string text = greeting->text();
        (void)co_await write("QUIT\r\n", kQuitTimeout);
        co_return Error::temporary("delivery.greeting",
                                   "4.3.0 host " + remote_ + " refused to talk to me: " + text);
    }
    Status greeted = co_await hello();
    if (!greeted) co_return greeted;
    if (options_.tls == TlsMode::none) co_return Status::success();
    co_return co_await start_tls();
}

asio::awaitable<Status> SmtpConnection::hello() {
    auto ehlo = co_await command("EHLO " + options_.helo_name + "\r\n", options_.command_timeout);
    if (!ehlo) co_return ehlo.error();
    if (ehlo->positive()) {
        capabilities_ = parse_capabilities(*ehlo);
        co_return Status::success();
    }
    if (!ehlo->permanent())
        co_return Error::temporary("delivery.helo", "host " + remote_ + " said: " + ehlo->text() +
                                                        " (in reply to EHLO command)");
    auto helo = co_await command("HELO " + options_.helo_name + "\r\n", options_.command_timeout);
    if (!helo) co_return helo.error();
    if (!helo->positive())
        co_return Error::temporary("delivery.helo", "host " + remote_ + " said: " + helo->text() +
                                                        " (in reply to HELO command)");
    capabilities_ = Capabilities{};
    co_return Status::success();
}

asio::awaitable<Status> SmtpConnection::start_tls() {
    const bool required = options_.tls == TlsMode::required;
    if (!capabilities_.starttls) {
        if (required)
            co_return Error::temporary("delivery.tls_required",
                                       "4.7.4 TLS is required, but was not offered by host " + remote_);
        co_return Status::success();
    }
    if (required && (!options_.tls_context || !options_.tls_context->problem().empty()))
        co_return Error::temporary(
            "delivery.tls_required",
            "4.7.5 TLS is required, but " +
                (options_.tls_context ? options_.tls_context->problem() : std::string("no TLS context")));
    auto reply = co_await command("STARTTLS\r\n", options_.command_timeout);
    if (!reply) co_return reply.error();
    if (reply->code != 220) {
        if (required)
            co_return Error::temporary("delivery.tls_required", "4.7.4 TLS is required, but host " + remote_ +
                                                                    " refused to start TLS: " + reply->text());
        co_return Status::success();  // "may": carry on in plaintext, as the server asked
    }
    if (!input_.empty())
        co_return Error::temporary("delivery.protocol", "4.5.0 host " + remote_ +
                                                            " sent data after its reply to STARTTLS");

    tls_.emplace(std::move(*plain_), options_.tls_context->context());
    plain_.reset();
    SSL* ssl = tls_->native_handle();
    const bool ip_host = is_ip_literal(host_);
    if (!ip_host) SSL_set_tlsext_host_name(ssl, host_.c_str());
    if (required) {
        tls_->set_verify_mode(asio::ssl::verify_peer);
        if (ip_host) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host_.c_str());
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            SSL_set1_host(ssl, host_.c_str());
        }
    } else {
        tls_->set_verify_mode(asio::ssl::verify_none);
    }

    lowest().expires_after(options_.command_timeout);
    beast::error_code error;
    co_await tls_->async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, error));
    if (error) {
        const long verify = SSL_get_verify_result(ssl);
        if (required && verify != X509_V_OK)
            co_return Error::temporary("delivery.tls_required",
                                       "4.7.5 TLS is required, but certificate verification failed for " +
                                           remote_ + ": " + X509_verify_cert_error_string(verify));
        const std::string reason = error == beast::error::timeout ? "timed out" : error.message();
        co_return Error::temporary(required ? "delivery.tls_required" : "delivery.tls_handshake",
                                   std::string(required ? "4.7.5 TLS is required, but the " : "4.7.5 ") +
                                       "TLS handshake with " + remote_ + " failed: " + reason);
    }
    tls_version_ = SSL_get_version(ssl);
    tls_cipher_ = SSL_get_cipher_name(ssl);
    // RFC 3207 §4.2: forget what the server said before TLS, ask again.
    capabilities_ = Capabilities{};
    auto ehlo = co_await command("EHLO " + options_.helo_name + "\r\n", options_.command_timeout);
    if (!ehlo) co_return ehlo.error();
    if (!ehlo->positive())
        co_return Error::temporary("delivery.helo", "host " + remote_ + " said: " + ehlo->text() +
                                                        " (in reply to EHLO command after STARTTLS)");
    capabilities_ = parse_capabilities(*ehlo);
    co_return Status::success();
}

asio::awaitable<TransactionResult> SmtpConnection::send(const Transaction& transaction) {
    TransactionResult result;
    const std::size_t count = transaction.recipients.size();
    result.recipients.resize(count);
    std::vector<bool> answered(count, false);
    std::vector<bool> accepted(count, false);

    // Every recipient without an answer yet gets this outcome.
    auto settle_rest = [&](Outcome outcome, const std::string& reply) {
        for (std::size_t i = 0; i < count; ++i) {
            if (answered[i] && !accepted[i]) continue;
            result.recipients[i] = {outcome, reply};
            answered[i] = true;
            accepted[i] = false;
        }
    };
    auto in_reply_to = [&](const Reply& reply, const char* command_name) {
        return reply.text() + " (in reply to " + command_name + " command)";
    };

    if (transaction.smtputf8 && !capabilities_.smtputf8) {
        settle_rest(Outcome::bounced,
                    "5.6.7 SMTPUTF8 is required, but was not offered by host " + remote_);
        result.reusable = true;
        co_return result;
    }
    const std::size_t size = transaction.message->size();
    if (capabilities_.size && capabilities_.max_size > 0 && size > capabilities_.max_size) {
        settle_rest(Outcome::bounced, "5.3.4 message size " + std::to_string(size) + " exceeds size limit " +
                                          std::to_string(capabilities_.max_size) + " of server " + remote_);
        result.reusable = true;
        co_return result;
    }

    const bool pipelining = capabilities_.pipelining;
    const std::string mail = mail_from_command(transaction, capabilities_);
    std::vector<std::string> rcpt_lines;
    rcpt_lines.reserve(count);
    for (const auto& recipient : transaction.recipients) rcpt_lines.push_back("RCPT TO:<" + recipient + ">\r\n");

    // MAIL FROM (with every RCPT TO in the same write when pipelining).
    result.last_command = "MAIL FROM";
    std::string first_write = mail;
    if (pipelining)
        for (const auto& line : rcpt_lines) first_write += line;
    Status written = co_await write(first_write, options_.command_timeout);
    if (!written) {
        settle_rest(Outcome::deferred, written.error().message + " MAIL FROM");
        result.stale = true;
        co_return result;
    }
    auto mail_reply = co_await read_reply(options_.command_timeout);
    if (!mail_reply) {
        settle_rest(Outcome::deferred, mail_reply.error().message + " (in reply to MAIL FROM command)");
        result.stale = true;
        co_return result;
    }
    if (mail_reply->code == 421) {
        // The server is closing (often its idle timeout on a reused connection,
        // which TLS hides until read): nothing was accepted; a fresh
        // connection is worth one more try before anything is deferred.
        settle_rest(Outcome::deferred, in_reply_to(*mail_reply, "MAIL FROM"));
        result.stale = true;
        co_return result;
    }
    if (!mail_reply->positive()) {
        settle_rest(mail_reply->permanent() ? Outcome::bounced : Outcome::deferred,
                    in_reply_to(*mail_reply, "MAIL FROM"));
        if (pipelining) {
            // The server still answers every pipelined RCPT: read them to stay in step.
            for (std::size_t i = 0; i < count; ++i) {
                auto ignored = co_await read_reply(options_.command_timeout);
                if (!ignored) co_return result;
            }
        }
        result.reusable = true;
        co_return result;
    }

    // RCPT TO, one reply per recipient, in order.
    result.last_command = "RCPT TO";
    std::size_t accepted_count = 0;
    for (std::size_t i = 0; i < count; ++i) {
        if (!pipelining) {
            Status sent = co_await write(rcpt_lines[i], options_.command_timeout);
            if (!sent) {
                settle_rest(Outcome::deferred, sent.error().message + " RCPT TO");
                co_return result;
            }
        }
        auto reply = co_await read_reply(options_.command_timeout);
        if (!reply) {
            settle_rest(Outcome::deferred, reply.error().message + " (in reply to RCPT TO command)");
            co_return result;
        }
        answered[i] = true;
        if (reply->positive()) {
            accepted[i] = true;
            ++accepted_count;
            result.recipients[i] = {Outcome::delivered, reply->text()};
        } else {
            result.recipients[i] = {outcome_of(*reply), in_reply_to(*reply, "RCPT TO")};
        }
    }
    if (accepted_count == 0) {
        result.reusable = true;
        co_return result;
    }

    // DATA, the body, and the final reply that decides for every accepted recipient.
    result.last_command = "DATA";
    auto data_reply = co_await command("DATA\r\n", options_.command_timeout);
    if (!data_reply) {
        settle_rest(Outcome::deferred, data_reply.error().message + " (in reply to DATA command)");
        co_return result;
    }
    if (data_reply->code != 354) {
        settle_rest(data_reply->permanent() ? Outcome::bounced : Outcome::deferred,
                    in_reply_to(*data_reply, "DATA"));
        result.reusable = data_reply->permanent() || data_reply->transient();
        co_return result;
    }
    result.last_command = "end of data";
    const std::string body = dot_stuff(*transaction.message);
    Status body_sent = co_await write(body, options_.data_timeout);
    if (!body_sent) {
        settle_rest(Outcome::deferred, body_sent.error().message + " message body");
        co_return result;
    }
    auto final_reply = co_await read_reply(options_.data_timeout);
    if (!final_reply) {
        settle_rest(Outcome::deferred, final_reply.error().message +
                                           " (in reply to end of DATA command; the message may be delivered twice)");
        co_return result;
    }
    settle_rest(outcome_of(*final_reply), final_reply->positive() ? final_reply->text()
                                                                  : in_reply_to(*final_reply, "end of DATA"));
    result.reusable = true;
    co_return result;
}

asio::awaitable<bool> SmtpConnection::reset() {
    auto reply = co_await command("RSET\r\n", options_.command_timeout);
    co_return reply.ok() && reply->positive() && input_.empty();
}

asio::awaitable<void> SmtpConnection::quit() {
    const Seconds timeout = std::min(options_.command_timeout, kQuitTimeout);
    Status written = co_await write("QUIT\r\n", timeout);
    if (written) {
        auto ignored = co_await read_reply(timeout);
        (void)ignored;
    }
    close();
}

bool SmtpConnection::has_unsolicited_input() {
    if (!input_.empty()) return true;
    beast::error_code error;
    const std::size_t waiting = lowest().socket().available(error);
    if (error || !lowest().socket().is_open()) return true;
    // Under TLS the socket may hold a post-handshake record (a TLS 1.3 session
    // ticket): only plaintext bytes prove that the server spoke.
    return !tls_ && waiting > 0;
}

asio::awaitable<Result<SmtpConnection::Pointer>> connect_next_hop(asio::any_io_executor executor,
                                                                  std::vector<HostAddresses> hosts,
                                                                  std::uint16_t port, SessionOptions options) {
    std::optional<Error> last_error;
    std::size_t tries = 0;
    for (const auto& host : hosts) {
        for (const auto& address : host.addresses) {
            if (tries++ >= kMaxAddressesPerAttempt) break;
            auto connection = co_await SmtpConnection::open(executor, host.host, address, port, options);
            if (connection) co_return connection;
            if (connection.error().code == "delivery.tls_handshake" && options.tls == TlsMode::may) {
                spdlog::warn("{} {}; retrying {}[{}]:{} without TLS (tls=may)", options.log_context,
                             connection.error().message, host.host, address, port);
                SessionOptions plaintext = options;
                plaintext.tls = TlsMode::none;
                auto retry = co_await SmtpConnection::open(executor, host.host, address, port, plaintext);
                if (retry) co_return retry;
                last_error = retry.error();
                continue;
            }
            spdlog::info("{} {}", options.log_context, connection.error().message);
            last_error = connection.error();
        }
    }
    if (!last_error)
        co_return Error::temporary("delivery.connect", "4.4.1 no address to connect to");
    co_return *last_error;
}

}  // namespace postvault::delivery
