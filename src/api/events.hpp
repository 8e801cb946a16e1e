// Event streams, shared by the status monitor and /events.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>
#include <vector>

#include "api/context.hpp"
#include "http/message.hpp"

namespace buzzer::api {

/// Whether the client asked for text/event-stream.
bool wants_event_stream(const http::request& req);

/// Opens an event stream over `ids` (200 streaming, 204 when all ended, 404 unknown id).
boost::asio::awaitable<http::response> open_event_stream(context& ctx, const http::request& req,
                                                         std::vector<std::string> ids);

}  // namespace buzzer::api
