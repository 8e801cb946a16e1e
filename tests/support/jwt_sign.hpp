// Test-only minting of JWTs and key pairs, so that tests can present tokens an issuer made.
#pragma once

#include <string>
#include <string_view>

#include "auth/jwt.hpp"

namespace buzzer::test {

// A private key and its public key, both as PEM text.
struct key_pair {
    std::string private_pem;
    std::string public_pem;
};

// A new key pair: "P-256", "P-384", "P-521" (EC) or "RSA-<bits>" (e.g. "RSA-2048").
// Throws std::runtime_error when OpenSSL cannot make it.
key_pair make_key_pair(std::string_view kind);

// A self-signed certificate (PEM) for the pair's public key, valid from an hour ago for a day.
std::string make_certificate(const key_pair& pair);

// The compact JWS base64url(header_json) "." base64url(payload_json) "." signature, signed
// with `alg` under `key`: the HMAC secret for HS*, a PEM private key for RS* and ES* (ES as
// JOSE's raw R||S). The texts are used as given, so tests can sign anything, `alg` in the
// header or not. Throws std::runtime_error when the key does not load or signing fails.
std::string sign_jwt(std::string_view header_json, std::string_view payload_json, auth::jwt_alg alg,
                     std::string_view key);

}  // namespace buzzer::test
