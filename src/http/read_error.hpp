// What a failed read of a request calls for: one table for the header and the body.
#pragma once

#include <boost/system/error_code.hpp>
#include <cstddef>
#include <optional>

#include "http/message.hpp"

namespace buzzer::http {

/// The part of a request that was being read when the read failed.
enum class read_phase { header, body };

/// The problem to answer before closing the connection after reading `phase` of a request
/// failed with `ec`; none when the client went away, and the connection closes silently.
/// The limits are the ones the problems quote.
std::optional<http_error> read_problem(boost::system::error_code ec, read_phase phase,
                                       std::size_t header_limit, std::size_t body_limit);

}  // namespace buzzer::http
