// Executors that run a kind's work outside the process: a command (exec) or an HTTP upstream.
#pragma once

#include <buzzer/server.hpp>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace buzzer::jobs {

/// How to run a command per attempt.
struct exec_spec {
    std::vector<std::string> argv;  ///< argv[0] is the program (PATH is searched if no '/')
    std::string cwd;                ///< working directory; empty: the server's
    std::vector<std::pair<std::string, std::string>> env;  ///< added to the server's environment
    double kill_grace_s = 5;                    ///< SIGTERM to SIGKILL delay on cancel/timeout
    std::size_t max_output = 16 * 1024 * 1024;  ///< stdout bytes before the attempt fails
};

/// A job function that runs `spec` per attempt: input JSON on stdin, JSON Lines on stdout.
job_function make_exec_job(exec_spec spec);

/// Kills (SIGKILL) the process group of every command that runs now, those still stopping
/// included: the end of a shutdown's grace. Returns how many groups were signalled.
int kill_running_commands();

/// Kills (SIGKILL) every process of this user whose environment names one of `operation_ids`
/// in BUZZER_OPERATION_ID: what attempts of a server that was killed left running (a command's
/// direct child dies with the server, its own children do not). Returns how many were killed.
int end_orphans(const std::vector<std::string>& operation_ids);

/// How to call an upstream per attempt.
struct http_spec {
    std::string url;  ///< http://host[:port]/path
    std::string method = "POST";
    std::vector<std::pair<std::string, std::string>> headers;
    std::size_t max_body = 16 * 1024 * 1024;  ///< response bytes before the attempt fails
};

/// A job function that sends the input to `spec.url` per attempt and keeps the answer.
job_function make_http_job(http_spec spec);

}  // namespace buzzer::jobs
