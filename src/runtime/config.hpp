// Command line and configuration file: both produce `buzzer::options`.
#pragma once

#include <buzzer/server.hpp>

#include <stdexcept>
#include <string>

namespace buzzer::runtime {

/// A configuration problem; the message names the file, the key path and the problem.
class config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// What the command line asked for.
struct command_line {
    options opts;
    bool help = false;
    bool version = false;
    std::string help_text;
};

/// Parses argv (and the --config file it names; flags override the file).
command_line parse_command_line(int argc, const char* const* argv);

/// Applies a JSON configuration text to `opts`; `file` names it in errors.
void apply_config(options& opts, const std::string& text, const std::string& file);

}  // namespace buzzer::runtime
