#include "runtime/build_info.hpp"

#include <boost/version.hpp>

#include "build_commit.hpp"
#include "http/tls_context.hpp"
#include "store/libraries.hpp"

namespace buzzer::runtime {

namespace {

std::string compiler() {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "GCC " __VERSION__;
#else
    return "unknown";
#endif
}

std::string boost_version() {
    return std::to_string(BOOST_VERSION / 100000) + "." +
           std::to_string(BOOST_VERSION / 100 % 1000) + "." + std::to_string(BOOST_VERSION % 100);
}

build_info make() {
    const auto db = store::client_library_versions();
    return {BUZZER_VERSION,  BUZZER_COMMIT, BUZZER_BUILD_OPTIONS,        compiler(),
            boost_version(), db.sqlite,     http::tls_library_version(), db.libpq};
}

}  // namespace

const build_info& this_build() {
    static const build_info info = make();
    return info;
}

std::string version_text(const std::string& allocator) {
    const auto& b = this_build();
    return "buzzer " + b.version + " (commit " + b.commit + ")\n" + "build: " + b.options + ", " +
           b.compiler + "\n" + "libraries: SQLite " + b.sqlite + ", OpenSSL " + b.openssl +
           (b.libpq.empty() ? std::string(", no libpq") : ", libpq " + b.libpq) + ", Boost " +
           b.boost + (allocator.empty() ? std::string() : ", " + allocator) + "\n";
}

std::vector<std::pair<std::string, std::string>> build_labels() {
    const auto& b = this_build();
    return {{"version", b.version}, {"commit", b.commit},   {"options", b.options},
            {"sqlite", b.sqlite},   {"openssl", b.openssl}, {"libpq", b.libpq}};
}

}  // namespace buzzer::runtime
