// The fixed key set of the JWT fuzz targets: one key of each family, made once per process.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "auth/base64url.hpp"
#include "auth/jwt.hpp"

namespace buzzer::fuzz {

/// The HS256 key "h1": fixed, so that seeds of the corpus carry valid signatures.
inline const std::string hs256_secret = "buzzer-fuzz-secret-0123456789abcdef";

/// The time the targets verify at: 2027-01-15, within the seeds' validity.
inline constexpr core::millis now = 1'800'000'000'000;

/// The public key PEM of `key`, which it frees.
inline std::string public_pem(EVP_PKEY* key) {
    BIO* bio = BIO_new(BIO_s_mem());
    if (!key || !bio || !PEM_write_bio_PUBKEY(bio, key)) std::abort();
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<std::size_t>(n));
    BIO_free(bio);
    EVP_PKEY_free(key);
    return pem;
}

/// h1 (HS256), r1 (RS256), e1 (ES256), e5 (ES512).
inline const auth::jwt_keys& keys() {
    static const auth::jwt_keys k = [] {
        auth::jwt_keys keys;
        keys.add_secret("h1", auth::jwt_alg::hs256, hs256_secret);
        keys.add_pem("r1", auth::jwt_alg::rs256,
                     public_pem(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048})));
        keys.add_pem("e1", auth::jwt_alg::es256,
                     public_pem(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")));
        keys.add_pem("e5", auth::jwt_alg::es512,
                     public_pem(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521")));
        return keys;
    }();
    return k;
}

/// The HS256 key alone, without kid.
inline const auth::jwt_keys& single_key() {
    static const auth::jwt_keys k = [] {
        auth::jwt_keys keys;
        keys.add_secret("", auth::jwt_alg::hs256, hs256_secret);
        return keys;
    }();
    return k;
}

/// The rules of the seeds.
inline const auth::jwt_rules& rules() {
    static const auth::jwt_rules r = [] {
        auth::jwt_rules r;
        r.issuer = "https://login.example.com/";
        r.audience = "buzzer";
        return r;
    }();
    return r;
}

/// The compact JWS of `header` and `payload` (JSON texts), signed HS256 with hs256_secret.
inline std::string sign_hs256(std::string_view header, std::string_view payload) {
    const std::string input =
        auth::base64url_encode(header) + "." + auth::base64url_encode(payload);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), hs256_secret.data(), static_cast<int>(hs256_secret.size()),
         reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
    return input + "." +
           auth::base64url_encode(std::string_view(reinterpret_cast<char*>(mac), len));
}

/// Checks what any accepted token must satisfy; aborts (a finding) when it does not.
inline void check(const std::variant<auth::jwt_claims, auth::jwt_error>& result) {
    if (const auto* c = std::get_if<auth::jwt_claims>(&result)) {
        if (c->tenant.empty()) std::abort();
        if (c->expires_at + rules().leeway_s * 1000 <= now) std::abort();
    } else if (auth::describe(std::get<auth::jwt_error>(result)).empty()) {
        std::abort();
    }
}

}  // namespace buzzer::fuzz
