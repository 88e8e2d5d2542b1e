// gateway/control/control.h — the administrator's channel to a running server.
//
// `postvault queue ...` and `postvault reload` talk to the server over a Unix
// socket (server.control_socket, mode 0600 inside the data directory): one
// JSON request line, one JSON response line. Requests:
//   {"command":"queue.list"}            -> {"ok":true,"messages":[...]}
//   {"command":"queue.show","id":ID}    -> {"ok":true,"message":{...}}
//   {"command":"queue.retry","id":ID}   -> {"ok":true}
//   {"command":"queue.release","id":ID} -> {"ok":true,"released":N}  (held recipients)
//   {"command":"queue.delete","id":ID}  -> {"ok":true}
//   {"command":"queue.flush"}           -> {"ok":true,"scheduled":N}
//   {"command":"queue.quarantine"}      -> {"ok":true,"records":[...]}
//   {"command":"status"}                -> {"ok":true,...counters}
//   {"command":"reload"}                -> {"ok":true} or {"ok":false,"error":...}
// Errors: {"ok":false,"error":{"code":..., "message":...}}.
// Requests run on the worker pool (they read RocksDB); the socket has a read
// timeout and a 64 KiB request limit.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/asio.h"
#include "common/result.h"
#include "gateway/delivery/engine.h"
#include "gateway/queue/queue.h"

namespace postvault::control {

struct Handlers {
    queue::Queue* queue = nullptr;
    delivery::Engine* delivery = nullptr;
    std::function<Status()> reload;                   // re-read the config file
    std::function<nlohmann::json()> status;           // counters for "status"
    // Further commands by name (the archive's "archive.*"), run on the worker
    // pool; they answer {"ok":true,...} or {"ok":false,"error":{...}}.
    std::map<std::string, std::function<nlohmann::json(const nlohmann::json& request)>> commands;
};

class ControlServer {
public:
    ControlServer(asio::io_context& io, asio::thread_pool& workers, Handlers handlers);
    ~ControlServer();
    Status start(const std::string& socket_path);
    void stop();

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

// {"ok":false,"error":{"code","message"}}: the answer to a failed request.
nlohmann::json error_json(const Error& error);

// The JSON form of a queued message, shared by queue.list/queue.show.
nlohmann::json to_json(const queue::QueuedMessage& message);

// Client side: sends one request and returns the parsed response, or an
// Error when the server is not running, answered garbage or took longer than
// `timeout` (long for archive imports).
Result<nlohmann::json> send_request(const std::string& socket_path, const nlohmann::json& request,
                                    std::chrono::seconds timeout = std::chrono::seconds(60));

}  // namespace postvault::control
