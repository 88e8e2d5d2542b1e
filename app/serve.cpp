// app/serve.cpp — `postvault serve`: wires the modules into one server.
//
// Owns the io_context (I/O threads), the worker pool (RocksDB, Argon2, DNS),
// the queue, the delivery engine, the SMTP server and the control socket.
// SIGTERM/SIGINT drain and exit 0: listeners close, transactions in progress
// finish, deliveries in flight are recorded. SIGHUP reloads the configuration
// file; an invalid file is reported and the running configuration stays.
#include <sys/stat.h>

#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "app/commands.h"
#include "common/asio.h"
#include "common/config.h"
#include "common/log.h"
#include "gateway/control/control.h"
#include "gateway/delivery/engine.h"
#include "gateway/queue/queue.h"
#include "gateway/smtp/server.h"

namespace postvault::app {

namespace {
constexpr auto smtp_drain_grace = std::chrono::seconds(30);
constexpr auto delivery_drain_grace = std::chrono::seconds(30);
constexpr std::size_t worker_threads = 4;
}  // namespace

int run_serve(const std::string& config_path) {
    auto loaded = load_config(config_path);
    if (!loaded) {
        std::cerr << loaded.error().message << "\n";
        return 1;
    }
    auto config = std::make_shared<const Config>(std::move(*loaded));
    if (auto logging = setup_logging(config->server.log_level); !logging) {
        std::cerr << logging.error().message << "\n";
        return 1;
    }

    std::error_code error;
    std::filesystem::create_directories(config->server.data_dir, error);
    if (error) {
        spdlog::error("serve: cannot create data directory {}: {}", config->server.data_dir, error.message());
        return 1;
    }
    chmod(config->server.data_dir.c_str(), 0700);

    auto queue = queue::Queue::open({(std::filesystem::path(config->server.data_dir) / "queue").string(),
                                     config->smtp.min_free_disk});
    if (!queue) {
        spdlog::error("serve: cannot open the queue: {}", queue.error().message);
        return 1;
    }

    unsigned io_threads = config->server.io_threads > 0 ? static_cast<unsigned>(config->server.io_threads)
                                                        : std::max(2u, std::thread::hardware_concurrency());
    asio::io_context io(static_cast<int>(io_threads));
    asio::thread_pool workers(worker_threads);

    delivery::Engine engine(io, **queue, config);
    smtp::Server server(io, workers, **queue, config,
                        [&engine](const std::string& queue_id) { engine.enqueue(queue_id); });

    std::mutex config_mutex;
    auto reload = [&]() -> Status {
        auto fresh = load_config(config_path);
        if (!fresh) {
            spdlog::error("serve: reload refused, keeping the running configuration:\n{}", fresh.error().message);
            return fresh.error();
        }
        auto next = std::make_shared<const Config>(std::move(*fresh));
        std::lock_guard lock(config_mutex);
        (void)setup_logging(next->server.log_level);
        server.reload(next);
        engine.reload(next);
        config = next;
        spdlog::info("serve: configuration reloaded from {}", config_path);
        return Status::success();
    };

    control::Handlers handlers;
    handlers.queue = queue->get();
    handlers.delivery = &engine;
    handlers.reload = reload;
    handlers.status = [&]() {
        auto stats = engine.stats();
        return nlohmann::json{{"smtp_sessions", server.active_sessions()},
                              {"delivery_connections", stats.active_connections},
                              {"scheduled_messages", stats.scheduled_messages},
                              {"delivered", stats.delivered},
                              {"deferred", stats.deferred},
                              {"bounced", stats.bounced}};
    };
    control::ControlServer control_server(io, workers, handlers);

    if (auto started = server.start(); !started) {
        spdlog::error("serve: {}", started.error().message);
        return 1;
    }
    if (auto started = control_server.start(config->server.control_socket); !started) {
        spdlog::error("serve: {}", started.error().message);
        return 1;
    }
    engine.start();
    spdlog::info("serve: postvault ready (hostname={} data_dir={} control={})", config->server.hostname,
                 config->server.data_dir, config->server.control_socket);

    asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
    std::function<void(const boost::system::error_code&, int)> on_signal;
    bool stopping = false;
    on_signal = [&](const boost::system::error_code& signal_error, int signal_number) {
        if (signal_error) return;
        if (signal_number == SIGHUP) {
            asio::post(workers, [&] { (void)reload(); });
            signals.async_wait(on_signal);
            return;
        }
        if (stopping) {
            // A second signal: stop now. Acknowledged mail is already durable.
            spdlog::warn("serve: signal {} received again, stopping without draining", signal_number);
            io.stop();
            return;
        }
        stopping = true;
        signals.async_wait(on_signal);
        spdlog::info("serve: signal {} received, draining", signal_number);
        control_server.stop();
        server.stop(smtp_drain_grace, [&] {
            engine.stop(delivery_drain_grace, [&] {
                spdlog::info("serve: stopped");
                io.stop();
            });
        });
    };
    signals.async_wait(on_signal);

    std::vector<std::thread> threads;
    for (unsigned i = 1; i < io_threads; ++i) threads.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& thread : threads) thread.join();
    workers.join();
    return 0;
}

}  // namespace postvault::app
