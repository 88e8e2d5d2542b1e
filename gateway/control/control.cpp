#include "gateway/control/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/async.h"

namespace postvault::control {

namespace {

using local = asio::local::stream_protocol;
constexpr std::size_t max_request_size = 64 * 1024;
constexpr auto request_timeout = std::chrono::seconds(10);
constexpr std::size_t max_response_size = 256 * 1024 * 1024;  // archive.get carries a message

}  // namespace

nlohmann::json error_json(const Error& error) {
    return {{"ok", false}, {"error", {{"code", error.code}, {"message", error.message}}}};
}

nlohmann::json to_json(const queue::QueuedMessage& message) {
    nlohmann::json recipients = nlohmann::json::array();
    for (const auto& recipient : message.recipients) {
        const queue::Handling& h = recipient.handling;
        nlohmann::json policy = nullptr;
        if (h != queue::Handling{})
            policy = {{"encrypt", h.encrypt}, {"fallback", h.fallback},     {"sign", h.sign},
                      {"require_tls", h.require_tls}, {"verified_key", h.verified_key},
                      {"quarantine", h.quarantine}, {"notify", h.notify},
                      {"rule", h.rule}};
        recipients.push_back({
            {"index", recipient.index},
            {"address", recipient.address},
            {"state", queue::to_string(recipient.state)},
            {"attempts", recipient.attempts},
            {"next_attempt", recipient.next_attempt_unix},
            {"updated", recipient.updated_unix},
            {"last_reply", recipient.last_reply},
            {"remote_host", recipient.remote_host},
            {"tls_version", recipient.tls_version},
            {"tls_cipher", recipient.tls_cipher},
            {"method", recipient.method},
            {"policy", policy},
        });
    }
    const auto& envelope = message.envelope;
    return {
        {"id", message.id},
        {"from", envelope.mail_from},
        {"size", message.size},
        {"received", envelope.received_unix},
        {"smtputf8", envelope.smtputf8},
        {"body_8bit", envelope.body_8bit},
        {"client", {{"ip", envelope.session.client_ip},
                    {"helo", envelope.session.helo},
                    {"tls_version", envelope.session.tls_version},
                    {"tls_cipher", envelope.session.tls_cipher},
                    {"auth_user", envelope.session.auth_user}}},
        {"recipients", recipients},
    };
}

struct ControlServer::Impl : std::enable_shared_from_this<ControlServer::Impl> {
    asio::io_context& io;
    asio::thread_pool& workers;
    Handlers handlers;
    std::unique_ptr<local::acceptor> acceptor;
    std::string path;

    Impl(asio::io_context& io_context, asio::thread_pool& pool, Handlers h)
        : io(io_context), workers(pool), handlers(std::move(h)) {}

    nlohmann::json handle(const nlohmann::json& request) {
        std::string command = request.value("command", "");
        std::string id = request.value("id", "");
        auto& queue = *handlers.queue;
        if (command == "queue.list") {
            nlohmann::json messages = nlohmann::json::array();
            for (const auto& message : queue.list()) messages.push_back(to_json(message));
            return {{"ok", true}, {"messages", messages}};
        }
        if (command == "queue.show") {
            auto message = queue.load(id);
            if (!message) return error_json(message.error());
            return {{"ok", true}, {"message", to_json(*message)}};
        }
        if (command == "queue.retry") {
            auto message = queue.load(id);
            if (!message) return error_json(message.error());
            if (!handlers.delivery->retry_now(id)) handlers.delivery->enqueue(id);
            return {{"ok", true}};
        }
        if (command == "queue.release") {
            auto released = queue.release(id);
            if (!released) return error_json(released.error());
            spdlog::info("qid={} control: {} held recipient(s) released by the administrator", id, *released);
            if (!handlers.delivery->retry_now(id)) handlers.delivery->enqueue(id);
            return {{"ok", true}, {"released", *released}};
        }
        if (command == "queue.delete") {
            Status removed = queue.remove(id);
            if (!removed) return error_json(removed.error());
            handlers.delivery->forget(id);
            spdlog::info("qid={} control: deleted by administrator", id);
            return {{"ok", true}};
        }
        if (command == "queue.flush") {
            handlers.delivery->flush();
            return {{"ok", true}, {"scheduled", handlers.delivery->stats().scheduled_messages}};
        }
        if (command == "queue.quarantine") {
            nlohmann::json records = nlohmann::json::array();
            for (const auto& record : queue.list_quarantined()) {
                records.push_back({{"key", record.key}, {"reason", record.reason}, {"time", record.quarantined_unix}});
            }
            return {{"ok", true}, {"records", records}};
        }
        if (command == "status") {
            nlohmann::json status = handlers.status ? handlers.status() : nlohmann::json::object();
            status["ok"] = true;
            return status;
        }
        if (command == "reload") {
            Status reloaded = handlers.reload ? handlers.reload() : Status::success();
            if (!reloaded) return error_json(reloaded.error());
            return {{"ok", true}};
        }
        if (auto extra = handlers.commands.find(command); extra != handlers.commands.end()) {
            return extra->second(request);
        }
        return error_json(Error::permanent("control.command", "unknown command '" + command + "'"));
    }

    asio::awaitable<void> serve(local::socket socket) {
        auto self = shared_from_this();
        beast::basic_stream<local, asio::any_io_executor> stream(std::move(socket));
        std::string request_text;
        boost::system::error_code error;
        stream.expires_after(request_timeout);
        co_await asio::async_read_until(stream, asio::dynamic_buffer(request_text, max_request_size), '\n',
                                        asio::redirect_error(asio::use_awaitable, error));
        nlohmann::json response;
        if (error) {
            response = error_json(Error::permanent("control.request", "request too long or incomplete"));
        } else {
            auto request = nlohmann::json::parse(request_text, nullptr, false);
            if (request.is_discarded() || !request.is_object()) {
                response = error_json(Error::permanent("control.request", "request is not a JSON object"));
            } else {
                auto run_request = [this, request] {
                    try {
                        return handle(request);
                    } catch (const std::exception& exception) {
                        return error_json(Error::temporary("control.internal", exception.what()));
                    }
                };
                response = co_await run_blocking(workers, std::move(run_request));
            }
        }
        // Replies can hold client- or remote-supplied bytes that are not UTF-8.
        std::string text = response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        stream.expires_after(request_timeout);
        co_await asio::async_write(stream, asio::buffer(text), asio::redirect_error(asio::use_awaitable, error));
    }

    asio::awaitable<void> accept_loop() {
        auto self = shared_from_this();
        for (;;) {
            boost::system::error_code error;
            local::socket socket(io);
            co_await acceptor->async_accept(socket, asio::redirect_error(asio::use_awaitable, error));
            if (error == asio::error::operation_aborted || !acceptor->is_open()) co_return;
            if (error) continue;
            asio::co_spawn(io, serve(std::move(socket)), asio::detached);
        }
    }
};

ControlServer::ControlServer(asio::io_context& io, asio::thread_pool& workers, Handlers handlers)
    : impl_(std::make_shared<Impl>(io, workers, std::move(handlers))) {}

ControlServer::~ControlServer() { stop(); }

Status ControlServer::start(const std::string& socket_path) {
    impl_->path = socket_path;
    std::error_code ignored;
    std::filesystem::remove(socket_path, ignored);
    boost::system::error_code error;
    auto acceptor = std::make_unique<local::acceptor>(impl_->io);
    mode_t old_mask = umask(077);
    acceptor->open(local(), error);
    if (!error) acceptor->bind(local::endpoint(socket_path), error);
    umask(old_mask);
    if (!error) acceptor->listen(16, error);
    if (error) return Error::permanent("control.listen", "cannot listen on " + socket_path + ": " + error.message());
    chmod(socket_path.c_str(), 0600);
    impl_->acceptor = std::move(acceptor);
    asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
    return Status::success();
}

void ControlServer::stop() {
    if (!impl_->acceptor) return;
    boost::system::error_code ignored;
    impl_->acceptor->close(ignored);
    std::error_code removed;
    std::filesystem::remove(impl_->path, removed);
}

Result<nlohmann::json> send_request(const std::string& socket_path, const nlohmann::json& request,
                                    std::chrono::seconds timeout_after) {
    asio::io_context io;
    local::socket socket(io);
    boost::system::error_code error;
    socket.connect(local::endpoint(socket_path), error);
    if (error) {
        return Error::temporary("control.connect", "cannot reach the server at " + socket_path + ": " +
                                                       error.message() + " (is `postvault serve` running?)");
    }
    // Never hang an administrator's shell.
    struct timeval timeout {static_cast<time_t>(timeout_after.count()), 0};
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    // A path from the command line need not be UTF-8: send it replaced rather than throw.
    std::string text = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    asio::write(socket, asio::buffer(text), error);
    std::string reply;
    asio::read_until(socket, asio::dynamic_buffer(reply, max_response_size), '\n', error);
    if (error && reply.empty()) {
        return Error::temporary("control.read", "no answer from the server: " + error.message());
    }
    auto response = nlohmann::json::parse(reply, nullptr, false);
    if (response.is_discarded()) return Error::permanent("control.reply", "the server answered garbage");
    return response;
}

}  // namespace postvault::control
