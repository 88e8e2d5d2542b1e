// gateway/smtp/server.h — the SMTP listener: sockets, TLS and timeouts around
// the protocol state machine of gateway/smtp/session.h.
//
// One coroutine per connection on its own strand: read with a timeout
// (smtp.command_timeout, or smtp.data_timeout during DATA/BDAT), feed the
// Session, write its replies, carry out its actions (queue commit through the
// queue's group commit, Argon2 checks on the worker pool, the STARTTLS
// handshake). Connection limits (total and per client IP) are enforced at
// accept with a 421 reply. The server never answers 250 before the queue
// reports the message durable; then it tells on_committed() (delivery).
//
// stop() closes the listeners, lets transactions in progress finish, answers
// 421 to idle sessions, and force-closes whatever is left after the grace
// period. reload() applies new limits, networks, domains and users to new
// connections; listen addresses and the certificate need a restart.
//
// Thread safety: public methods may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/asio.h"
#include "common/config.h"
#include "common/result.h"
#include "gateway/queue/queue.h"

namespace postvault::smtp {

class Server {
public:
    using CommittedCallback = std::function<void(const std::string& queue_id)>;

    Server(asio::io_context& io, asio::thread_pool& workers, queue::Queue& queue,
           std::shared_ptr<const Config> config, CommittedCallback on_committed);
    ~Server();

    // Binds every smtp.listen address; an Error names the one that failed.
    Status start();
    void reload(std::shared_ptr<const Config> config);
    void stop(std::chrono::seconds grace, std::function<void()> done);

    std::size_t active_sessions() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace postvault::smtp
