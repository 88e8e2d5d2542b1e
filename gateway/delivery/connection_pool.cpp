// gateway/delivery/connection_pool.cpp — see connection_pool.h.
#include "gateway/delivery/connection_pool.h"

#include <algorithm>

namespace postvault::delivery {

namespace {

constexpr std::chrono::seconds kReapInterval{1};

asio::awaitable<void> quit_and_close(SmtpConnection::Pointer connection) {
    co_await connection->quit();
}

}  // namespace

ConnectionPool::ConnectionPool(asio::any_io_executor executor) : executor_(std::move(executor)) {}

std::size_t ConnectionPool::open_connections() const {
    std::lock_guard lock(mutex_);
    return total_;
}

std::size_t ConnectionPool::idle_connections() const {
    std::lock_guard lock(mutex_);
    std::size_t count = 0;
    for (const auto& [destination, entries] : idle_) count += entries.size();
    return count;
}

std::optional<ConnectionPool::Grant> ConnectionPool::try_grant(const std::string& destination,
                                                               std::vector<SmtpConnection::Pointer>& to_close) {
    auto idle = idle_.find(destination);
    while (idle != idle_.end() && !idle->second.empty()) {
        SmtpConnection::Pointer connection = std::move(idle->second.back().connection);
        idle->second.pop_back();
        if (idle->second.empty()) idle_.erase(idle);
        if (!connection->has_unsolicited_input()) return Grant{std::move(connection)};
        // Dead or closing: drop it and let the caller use its slot for a new one.
        connection->close();
        return Grant{};
    }
    std::size_t& used = slots_[destination];
    if (used >= std::max<std::size_t>(1, limits_.per_destination)) return std::nullopt;
    if (total_ >= std::max<std::size_t>(1, limits_.total)) {
        // Full: close the oldest idle connection of another destination, if any.
        auto victim = std::find_if(idle_.begin(), idle_.end(), [](const auto& entry) { return !entry.second.empty(); });
        if (victim == idle_.end()) return std::nullopt;
        to_close.push_back(std::move(victim->second.front().connection));
        victim->second.pop_front();
        const std::string victim_destination = victim->first;
        if (victim->second.empty()) idle_.erase(victim);
        free_slot(victim_destination);
    }
    ++used;
    ++total_;
    return Grant{};
}

void ConnectionPool::free_slot(const std::string& destination) {
    auto slot = slots_.find(destination);
    if (slot != slots_.end() && slot->second > 0) {
        --slot->second;
        if (total_ > 0) --total_;
        if (slot->second == 0) slots_.erase(slot);
    }
}

void ConnectionPool::serve_waiters(std::vector<SmtpConnection::Pointer>& to_close) {
    for (auto waiter = waiters_.begin(); waiter != waiters_.end();) {
        auto grant = try_grant(waiter->destination, to_close);
        if (!grant) {
            ++waiter;
            continue;
        }
        waiter->completion->complete(std::move(grant));
        waiter = waiters_.erase(waiter);
    }
}

asio::awaitable<std::optional<ConnectionPool::Grant>> ConnectionPool::acquire(std::string destination,
                                                                              PoolLimits limits) {
    auto self = shared_from_this();
    auto initiation = [this, &destination, &limits](auto handler) {
            auto completion = make_pending_completion<std::optional<Grant>>(std::move(handler));
            std::vector<SmtpConnection::Pointer> to_close;
            {
                std::lock_guard lock(mutex_);
                limits_ = limits;
                if (shut_down_) {
                    completion->complete(std::nullopt);
                    return;
                }
                // First come, first served: only skip the queue when nobody waits for this destination.
                const bool queued = std::any_of(waiters_.begin(), waiters_.end(),
                                                [&](const Waiter& w) { return w.destination == destination; });
                std::optional<Grant> grant;
                if (!queued) grant = try_grant(destination, to_close);
                if (grant) {
                    completion->complete(std::move(grant));
                } else {
                    waiters_.push_back(Waiter{destination, std::move(completion)});
                }
            }
            close_later(std::move(to_close));
        };
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::optional<Grant>)>(
        initiation, asio::use_awaitable);
}

void ConnectionPool::give_back(const std::string& destination, SmtpConnection::Pointer connection) {
    std::vector<SmtpConnection::Pointer> to_close;
    bool reaper = false;
    {
        std::lock_guard lock(mutex_);
        if (shut_down_) {
            to_close.push_back(std::move(connection));
            free_slot(destination);
        } else {
            idle_[destination].push_back(
                Idle{std::move(connection), std::chrono::steady_clock::now() + limits_.idle_timeout});
            serve_waiters(to_close);
            reaper = !reaper_running_ && !idle_.empty();
            if (reaper) reaper_running_ = true;
        }
    }
    close_later(std::move(to_close));
    if (reaper) start_reaper();
}

void ConnectionPool::release(const std::string& destination) {
    std::vector<SmtpConnection::Pointer> to_close;
    {
        std::lock_guard lock(mutex_);
        free_slot(destination);
        if (!shut_down_) serve_waiters(to_close);
    }
    close_later(std::move(to_close));
}

void ConnectionPool::shut_down() {
    std::vector<SmtpConnection::Pointer> to_close;
    std::deque<Waiter> waiters;
    {
        std::lock_guard lock(mutex_);
        shut_down_ = true;
        for (auto& [destination, entries] : idle_) {
            for (auto& entry : entries) {
                to_close.push_back(std::move(entry.connection));
                free_slot(destination);
            }
        }
        idle_.clear();
        waiters.swap(waiters_);
    }
    for (auto& waiter : waiters) waiter.completion->complete(std::nullopt);
    close_later(std::move(to_close));
}

void ConnectionPool::close_later(std::vector<SmtpConnection::Pointer> connections) {
    for (auto& connection : connections)
        if (connection) asio::co_spawn(executor_, quit_and_close(std::move(connection)), asio::detached);
}

void ConnectionPool::start_reaper() {
    asio::co_spawn(executor_, reap(shared_from_this()), asio::detached);
}

asio::awaitable<void> ConnectionPool::reap(std::shared_ptr<ConnectionPool> self) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (true) {
        timer.expires_after(kReapInterval);
        boost::system::error_code ignored;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        std::vector<SmtpConnection::Pointer> to_close;
        {
            std::lock_guard lock(mutex_);
            const auto now = std::chrono::steady_clock::now();
            for (auto entries = idle_.begin(); entries != idle_.end();) {
                auto& queue = entries->second;
                for (auto entry = queue.begin(); entry != queue.end();) {
                    if (entry->expires <= now || entry->connection->has_unsolicited_input()) {
                        to_close.push_back(std::move(entry->connection));
                        entry = queue.erase(entry);
                        free_slot(entries->first);
                    } else {
                        ++entry;
                    }
                }
                entries = queue.empty() ? idle_.erase(entries) : std::next(entries);
            }
            if (!to_close.empty()) serve_waiters(to_close);
            if (idle_.empty() || shut_down_) {
                reaper_running_ = false;
                close_later(std::move(to_close));
                co_return;
            }
        }
        close_later(std::move(to_close));
    }
}

}  // namespace postvault::delivery
