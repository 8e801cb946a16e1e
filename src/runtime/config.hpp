// Command line and configuration file: both produce `buzzer::options`.
#pragma once

#include <boost/json/value.hpp>
#include <buzzer/server.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "auth/settings.hpp"
#include "jobs/executors.hpp"

namespace buzzer::runtime {

/// A configuration problem; the message names the flag, or the file and the key path, and
/// what the setting takes.
class config_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// A kind declared in the configuration file.
struct kind_config {
    std::string name;
    std::string executor;  ///< "exec" or "http"
    jobs::exec_spec exec;
    jobs::http_spec http;
    kind_options defaults;
    std::optional<boost::json::value> input;  ///< the input schema, already checked
};

/// What the command line asked for.
struct command_line {
    options opts;
    std::vector<kind_config> kinds;
    bool help = false;
    bool version = false;
    std::string help_text;
};

/// Parses argv (and the --config file it names; flags override the file), checking every
/// value against the one table of settings.
command_line parse_command_line(int argc, const char* const* argv);

/// Applies a JSON configuration text to `opts` and `kinds`; `file` names it in errors.
void apply_config(options& opts, std::vector<kind_config>& kinds, const std::string& text,
                  const std::string& file);

/// Whether the host of a listen address (HOST:PORT) is a loopback address.
bool is_loopback(const std::string& listen);

/// Checks the access settings of `o` (auth, tenants, cors) and the open-mode rule: open mode
/// only on loopback unless asked for. Throws config_error.
auth::settings check_access(const options& o);

/// Registers configured kinds with their executors and input checks.
void register_kinds(server& s, const std::vector<kind_config>& kinds);

}  // namespace buzzer::runtime
