// The credential of an Authorization header (RFC 6750 §2.1).
#pragma once

#include <string_view>

namespace buzzer::auth {

/// What an Authorization header holds.
struct bearer {
    /// none: no header (the caller's verdict); malformed: a header that is not
    /// `Bearer <token68>`; token: the credential is in `credential`.
    enum kind_t { none, malformed, token } kind = none;
    /// The credential, a view into the header's value.
    std::string_view credential;
};

/// Reads the value of a present Authorization header: the scheme `Bearer` in any case, one
/// or more spaces, then a token68 (`[A-Za-z0-9-._~+/]+=*`) up to the end. An empty value,
/// another scheme (`Basic ...`) or anything after the token is malformed.
bearer parse_authorization(std::string_view header_value);

}  // namespace buzzer::auth
