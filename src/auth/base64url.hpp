// base64url (RFC 4648 §5) without padding, as JWTs and the session cookie use it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace buzzer::auth {

/// `bytes` in base64url, without `=` padding.
std::string base64url_encode(std::string_view bytes);

/// The bytes that `text` encodes; nullopt unless it is canonical unpadded base64url: only the
/// characters A-Z a-z 0-9 - _, no `=`, a length that is not 1 more than a multiple of 4, and
/// the unused low bits of the last character zero (so each byte string has one encoding).
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace buzzer::auth
