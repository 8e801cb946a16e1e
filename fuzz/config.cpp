// The configuration file: any text either configures the server or is refused with a
// config_error naming the file, both when it is read and when its access settings (auth,
// tenants, cors) are checked.
#include "runtime/config.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace buzzer;
    const std::string text(reinterpret_cast<const char*>(data), size);
    options opts;
    std::vector<runtime::kind_config> kinds;
    try {
        runtime::apply_config(opts, kinds, text, "fuzz.json");
        runtime::check_access(opts);
    } catch (const runtime::config_error&) {
    }
    return 0;
}
