// Random bytes from the OS CSPRNG (getrandom), for ids, keys and secrets. Drawn straight from
// the kernel, so that a server that needs no cryptography never loads OpenSSL's.
#pragma once

#include <cstddef>

namespace buzzer::core {

/// Fills `out` with `n` random bytes; throws std::runtime_error if the kernel fails.
void random_bytes(void* out, std::size_t n);

}  // namespace buzzer::core
