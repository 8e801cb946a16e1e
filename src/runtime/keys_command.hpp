// `buzzer keys ...`: the operator's commands for API keys.
#pragma once

namespace buzzer::runtime {

/// Runs `buzzer keys ARGS...` (`argv` starts at the action); returns the exit status.
int keys_command(int argc, const char* const* argv);

}  // namespace buzzer::runtime
