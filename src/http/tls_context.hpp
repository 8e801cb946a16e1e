// The server's TLS settings: a certificate chain and its key, loaded from PEM files into an
// OpenSSL context that accepted connections share.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>

namespace buzzer::http {

/// An OpenSSL server context; connections made from it hold a reference of their own, so a
/// context that is replaced lives on as long as connections use it.
using tls_context = std::shared_ptr<SSL_CTX>;

/// Builds a context from `cert_file` (PEM: the leaf certificate, then the chain that follows
/// it) and `key_file` (its private key, PEM): TLS 1.2 and 1.3 only, forward-secret AEAD
/// ciphers only (ECDHE with AES-GCM or ChaCha20-Poly1305 for 1.2, the 1.3 defaults), session
/// tickets and a bounded session cache, no compression, no renegotiation. Throws
/// std::runtime_error naming the file and why when a file does not load, or when the key does
/// not match the certificate.
tls_context make_tls_context(const std::string& cert_file, const std::string& key_file);

/// The version of the OpenSSL library this process runs with (e.g. "3.0.17").
std::string tls_library_version();

}  // namespace buzzer::http
