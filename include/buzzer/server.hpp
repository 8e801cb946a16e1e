// Buzzer's embedding API: run the asynchronous request-reply server inside a C++ program
// and register kinds of work as coroutines.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace buzzer {

/// Settings of one server; every field has the documented default.
struct options {
    std::string listen = "127.0.0.1:8080";  ///< HOST:PORT; port 0 picks a free one
    std::string database = "buzzer.db";     ///< SQLite database file, or a PostgreSQL URI
    std::string public_url;                 ///< base of absolute hrefs; empty: relative hrefs
    unsigned threads = 0;                   ///< I/O threads; 0: one per core
    bool synchronous_full = true;           ///< SQLite synchronous=FULL (else NORMAL)
    bool builtin_kinds = true;              ///< register sleep, echo and fail
    std::size_t body_limit = 1 << 20;       ///< largest request body, bytes
    std::size_t header_limit = 16 * 1024;   ///< largest request header block, bytes
    double header_timeout_s = 10;           ///< time to receive a request's headers
    double idle_timeout_s = 60;             ///< keep-alive connection idle time
    double write_timeout_s = 30;            ///< time to send a response, or one stream write
    std::size_t max_connections = 20000;    ///< open connections; more are closed at once
    double sse_heartbeat_s = 15;            ///< idle time before a `: keepalive` comment
    unsigned sse_retry_ms = 2000;           ///< reconnection delay advertised to EventSource
    std::size_t sse_backlog = 256;          ///< events buffered for one slow stream
    double retention_s = 7 * 86400;         ///< how long finished operations are kept
    double shutdown_grace_s = 10;           ///< time running jobs get to stop on shutdown
    std::size_t max_pending = 100000;       ///< pending operations before 429
    unsigned max_running = 256;             ///< jobs running at once, all kinds together
    bool handle_signals = true;             ///< SIGINT and SIGTERM stop, SIGHUP reloads
    /// With $NOTIFY_SOCKET (a systemd service of Type=notify): READY=1 once listening,
    /// WATCHDOG=1 while the event loops answer, RELOADING=1 and READY=1 around a reload,
    /// STOPPING=1 at shutdown.
    bool notify_service_manager = true;
    bool log_json = false;           ///< log lines as JSON objects (else text)
    std::string log_level = "info";  ///< least severe level logged: debug, info, warn, error
    double node_timeout_s = 15;      ///< PostgreSQL: silence after which a node is taken for dead
    std::string node_id;             ///< PostgreSQL: this node's id; empty: a new one each start
    std::string tls_cert;  ///< PEM certificate chain, leaf first; with tls_key: HTTPS only
    std::string tls_key;   ///< PEM private key of tls_cert
    /// Access control, as JSON texts of the configuration file's members: `auth` (empty: not
    /// configured, open mode on loopback addresses only; `"none"`: open mode anywhere; an
    /// object: credentials needed), `tenants` (quotas) and `cors`. See the README.
    std::string auth;
    std::string tenants;      ///< JSON object of quotas per tenant; empty: none
    std::string cors;         ///< JSON object of the CORS policy; empty: no CORS
    std::string config_file;  ///< where SIGHUP reads `auth`, `tenants` and `cors` again
};

/// Defaults of a kind; a request may override timeout, attempts and priority.
struct kind_options {
    double timeout_s = 60;       ///< attempt deadline
    int max_attempts = 3;        ///< attempts before the operation fails
    unsigned concurrency = 0;    ///< jobs of this kind at once; 0: only the global limit
    int priority = 0;            ///< -100..100, higher runs first
    double backoff_base_s = 1;   ///< first retry delay bound (full jitter)
    double backoff_max_s = 300;  ///< retry delay cap
};

/// A failure a job reports. Retryable failures are attempted again while attempts remain.
class job_error : public std::runtime_error {
  public:
    /// `detail` becomes the problem's detail; `type` its type URI.
    explicit job_error(const std::string& detail, bool retryable = true,
                       std::string type = "/problems/job-failed");
    /// Whether another attempt may succeed.
    bool retryable() const noexcept { return retryable_; }
    /// The problem type reported in the operation's error.
    const std::string& type() const noexcept { return type_; }

  private:
    bool retryable_;
    std::string type_;
};

/// Thrown by an input check: the request is answered with 422 and this detail.
class invalid_input : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// One attempt of an operation, as its kind's function sees it.
class job {
  public:
    virtual ~job() = default;
    /// The operation id (a ULID).
    virtual const std::string& id() const = 0;
    /// The kind's name.
    virtual const std::string& kind() const = 0;
    /// The attempt number, from 1.
    virtual int attempt() const = 0;
    /// The operation's input (null when the request had none).
    virtual const boost::json::value& input() const = 0;
    /// The same input as compact JSON text, as stored: for jobs that pass it on unchanged.
    virtual std::string_view input_text() const = 0;
    /// Reports progress (percent 0..100): a progress event, durable when this resumes.
    virtual boost::asio::awaitable<void> progress(int percent, std::string message) = 0;
    /// Makes `body` of type `media_type` the result instead of the returned JSON.
    virtual void set_result(std::string body, std::string media_type) = 0;
};

/// The work of a kind: returns the result, throws job_error (or any exception) to fail the
/// attempt. Cancellation arrives through Asio's per-operation cancellation.
using job_function = std::function<boost::asio::awaitable<boost::json::value>(job&)>;

/// Checks a request's input before it is accepted; throws invalid_input.
using input_check = std::function<void(const boost::json::value&)>;

/// The database's schema is newer than this binary's: a newer Buzzer migrated it.
class schema_too_new : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

/// A Buzzer server: HTTP front, durable store, scheduler.
class server {
  public:
    /// Prepares a server; nothing is opened before run().
    explicit server(options opts);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Registers (or replaces) a kind. Call before run().
    void kind(const std::string& name, job_function fn, kind_options defaults = {},
              input_check check = {}, std::string executor = "embedded");

    /// Opens the database, recovers, listens and serves until stop() or a signal.
    /// Throws std::runtime_error when the database or the address cannot be used
    /// (schema_too_new when a newer binary migrated the database).
    void run();

    /// Starts a graceful shutdown; safe from any thread and from signal-free contexts.
    void stop();

    /// Called once listening, with the bound address as "HOST:PORT".
    std::function<void(const std::string&)> on_listening;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace buzzer
