// gateway/delivery/connection_pool.h — connection slots and idle SMTP
// connections, per destination (NextHop::key()).
//
// Every open connection holds one slot, whether it is busy, idle or still
// connecting. acquire() hands out, in this order: an idle connection to the
// destination (reuse), a free slot (the caller connects and later calls
// give_back() or release()), or, when the total limit is reached but the
// destination has room, a slot freed by closing another destination's idle
// connection. Otherwise the caller waits; waiters are served first come,
// first served as slots and connections come back.
//
// Idle connections are closed with QUIT after idle_timeout (checked about
// once a second), when the server has spoken unasked (a 421 before it
// hangs up), and at shut_down(), after which acquire() returns nullopt.
// Thread safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/asio.h"
#include "common/async.h"
#include "gateway/delivery/smtp_client.h"

namespace postvault::delivery {

struct PoolLimits {
    std::size_t total = 200;
    std::size_t per_destination = 20;
    std::chrono::seconds idle_timeout{10};
};

class ConnectionPool : public std::enable_shared_from_this<ConnectionPool> {
public:
    struct Grant {
        SmtpConnection::Pointer idle;  // null: a slot is reserved, open a new connection
    };

    explicit ConnectionPool(asio::any_io_executor executor);

    asio::awaitable<std::optional<Grant>> acquire(std::string destination, PoolLimits limits);
    // A clean connection (after RSET) to keep for reuse; its slot stays taken.
    void give_back(const std::string& destination, SmtpConnection::Pointer connection);
    // The slot's connection is gone or was never made: free the slot.
    void release(const std::string& destination);
    void shut_down();

    std::size_t open_connections() const;
    std::size_t idle_connections() const;

private:
    struct Idle {
        SmtpConnection::Pointer connection;
        std::chrono::steady_clock::time_point expires;
    };
    struct Waiter {
        std::string destination;
        std::unique_ptr<PendingCompletion<std::optional<Grant>>> completion;
    };

    // Grants what it can to `destination`; nullopt when it must wait.
    // Connections to close are appended to `to_close`.
    std::optional<Grant> try_grant(const std::string& destination, std::vector<SmtpConnection::Pointer>& to_close);
    // Serves queued waiters after slots or connections came back.
    void serve_waiters(std::vector<SmtpConnection::Pointer>& to_close);
    void free_slot(const std::string& destination);
    void close_later(std::vector<SmtpConnection::Pointer> connections);
    void start_reaper();
    asio::awaitable<void> reap(std::shared_ptr<ConnectionPool> self);

    asio::any_io_executor executor_;
    mutable std::mutex mutex_;
    PoolLimits limits_;
    std::size_t total_ = 0;
    std::map<std::string, std::size_t> slots_;            // destination -> open connections
    std::map<std::string, std::deque<Idle>> idle_;        // most recently used at the back
    std::deque<Waiter> waiters_;
    bool reaper_running_ = false;
    bool shut_down_ = false;
};

}  // namespace postvault::delivery
