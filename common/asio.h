// common/asio.h — the one way postvault includes Boost.Asio and Beast.
//
// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>;
// with GCC 12 in C++20 mode that fails to compile unless <utility> comes
// first. Every file that needs Asio or Beast includes this header instead.
#pragma once

#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>

namespace postvault {
namespace asio = boost::asio;
namespace beast = boost::beast;
}  // namespace postvault
