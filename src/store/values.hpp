// Values both backends keep in the same form: the kinds of an API key (a JSON array) and the
// canonical request body of an idempotency key.
#pragma once

#include <string>
#include <vector>

namespace buzzer::store {

/// A key's kinds as stored: a JSON array of strings.
std::string kinds_text(const std::vector<std::string>& kinds);

/// The kinds of a stored key. Text that is not an array of strings (written by hand) allows
/// no kind at all: a damaged limit must not become no limit.
std::vector<std::string> parse_kinds(const std::string& text);

/// Whether two canonical request bodies are the same. Texts differ for equal values too when
/// one was stored by an older version (numbers were written as 1.5E0 then): those compare as
/// values.
bool same_request(const std::string& stored, const std::string& sent);

}  // namespace buzzer::store
