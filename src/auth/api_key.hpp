// API keys: random secrets shown once, stored as SHA-256 hashes, compared in constant time.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace buzzer::auth {

/// A new API key, as made for `buzzer keys create` and `POST /keys`.
struct generated_key {
    /// `key_` and 20 base62 characters: what logs and lists name the key by. Not secret.
    std::string id;
    /// `bzk_` and 43 base62 characters (256 bits): shown once, never stored.
    std::string text;
    /// hash_api_key(text): what the store keeps.
    std::string hash;
};

/// Makes a key from OpenSSL's CSPRNG; throws std::runtime_error when it has no randomness.
generated_key generate_api_key();

/// The lowercase hex SHA-256 of a key's text (64 characters).
std::string hash_api_key(std::string_view text);

/// Whether `text` has the form of an API key: `bzk_`, then letters and digits only, 40 to 128
/// characters in all. Says nothing about whether the key exists.
bool looks_like_api_key(std::string_view text);

/// Whether two hashes are equal, in time that depends only on their lengths.
bool same_hash(std::string_view a, std::string_view b);

/// `bytes` raw bytes from OpenSSL's CSPRNG (for the session cookie's secret); throws
/// std::runtime_error when it has no randomness.
std::string random_secret(std::size_t bytes);

}  // namespace buzzer::auth
