// JSON as text: how deep documents may nest, and members taken from a document as written.
#pragma once

#include <boost/json/parse_options.hpp>
#include <cstddef>
#include <optional>
#include <string_view>

namespace buzzer::core {

/// How deeply arrays and objects may nest in a request body, an input or a result.
inline constexpr std::size_t max_json_depth = 512;

/// Parse options for documents from clients and jobs (their depth bounded by max_json_depth).
boost::json::parse_options json_options();

/// The text of member `key` of `object`, a JSON object that the parser has accepted, exactly
/// as written (without the white space around it); the last one when the key repeats, as the
/// parser keeps. The parser would turn 12345678901234567890123, -0 or 1e400 into doubles;
/// this keeps them as they were sent.
std::optional<std::string_view> member_text(std::string_view object, std::string_view key);

}  // namespace buzzer::core
