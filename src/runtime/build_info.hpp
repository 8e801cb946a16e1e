// What this build of Buzzer is: its version, commit and options (recorded by the build) and
// the libraries it runs with (as they report themselves), for `buzzer --version` and
// buzzer_build_info in /metrics.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace buzzer::runtime {

struct build_info {
    std::string version;   ///< e.g. "0.1.0"
    std::string commit;    ///< the source's commit, "+" when it had changes; "unknown" outside git
    std::string options;   ///< build type, sanitizers, linking, architecture
    std::string compiler;  ///< e.g. "GCC 12.2.0"
    std::string boost;     ///< e.g. "1.81.0"
    std::string sqlite;
    std::string openssl;
    std::string libpq;
};

const build_info& this_build();

/// The lines `buzzer --version` prints; `allocator` names the program's allocator
/// ("mimalloc 2.0.9", or empty for the C library's).
std::string version_text(const std::string& allocator);

/// The labels of buzzer_build_info.
std::vector<std::pair<std::string, std::string>> build_labels();

}  // namespace buzzer::runtime
