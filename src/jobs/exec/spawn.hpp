// Starting a command: its environment and where to look for its program, the pipes, and the
// child's code until execve, run on spawner threads of their own.
//
// Why not posix_spawn: glibc's posix_spawn (2.36 here) could do most of the child's set-up:
// its own process group (POSIX_SPAWN_SETPGROUP), default signal dispositions and an empty
// mask (POSIX_SPAWN_SETSIGDEF, POSIX_SPAWN_SETSIGMASK), the pipes on 0..2 (adddup2), the
// working directory (addchdir_np) and closing the server's other descriptors
// (addclosefrom_np); it too clones with CLONE_VM|CLONE_VFORK. What it has no attribute or file
// action for is prctl(PR_SET_PDEATHSIG) in the child, and the getppid check after it that
// catches a server that died before the call: that is what ends the command when the server is
// killed with SIGKILL and has no chance to stop it. Two lesser things besides: posix_spawnp
// searches the server's PATH, not the one of the environment the command gets (exec_spec.env
// may set PATH), and a failure comes back as a bare errno, so a working directory that does
// not exist could not be told from a program that does not exist.
#pragma once

#include <sys/types.h>

#include <boost/asio/awaitable.hpp>
#include <buzzer/server.hpp>
#include <string>
#include <vector>

#include "jobs/exec/unique_fd.hpp"
#include "jobs/executors.hpp"

namespace buzzer::jobs::exec {

/// What the child failed to do before execve; sent through the report pipe.
enum class child_stage : int { setup = 1, chdir = 2, exec = 3 };

/// What a child that failed before execve writes to the report pipe, which otherwise closes
/// at execve without a byte.
struct child_report {
    int stage = 0;  ///< a child_stage
    int error = 0;  ///< the errno of the failed step
};

/// A command ready to start.
struct command_line {
    std::vector<std::string> argv;  ///< argv[0] is the program
    std::vector<std::string> env;   ///< the whole environment, NAME=VALUE
    std::string cwd;                ///< empty: the server's working directory
};

/// A started command: its pid and the server's ends of its pipes (close-on-exec, all >= 3).
struct started_command {
    pid_t pid = -1;
    unique_fd stdin_write;
    unique_fd stdout_read;
    unique_fd stderr_read;
    unique_fd report_read;  ///< a child_report, or end of file at a successful execve
};

/// The server's environment, then spec.env, then BUZZER_OPERATION_ID and BUZZER_ATTEMPT;
/// later names win.
std::vector<std::string> build_environment(const exec_spec& spec, const job& j);

/// Where execve should look for `program`: itself if it has a '/', else each entry of the
/// PATH in `env` (or a default PATH) in order, an empty entry meaning the working directory.
std::vector<std::string> exec_candidates(const std::string& program,
                                         const std::vector<std::string>& env);

/// The command of `spec` for attempt `j`; throws job_error (not retryable) if argv is empty.
command_line make_command(const exec_spec& spec, const job& j);

/// Starts `cmd` in a process group of its own, tied to the server by PR_SET_PDEATHSIG, on
/// the spawner threads; resumes on the caller's executor. Throws job_error when a pipe or the
/// clone fails; what fails in the child after the clone comes through report_read.
boost::asio::awaitable<started_command> start_command(command_line cmd);

/// The error of a child that sent `r` on the report pipe, for `spec`'s program.
job_error child_failure(const exec_spec& spec, const child_report& r);

/// Makes sure SIGPIPE is ignored, so that writing to a command that stopped reading cannot
/// kill the server (the server ignores it already; an embedding program may not).
void ignore_sigpipe();

}  // namespace buzzer::jobs::exec
