#include "store/postgres/connection.hpp"

#include <libpq-fe.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

namespace buzzer::store::postgres {
namespace {

// SQLSTATEs after which a later retry may succeed: the connection or the server went away,
// the server is starting, stopping or out of resources, a standby took no write, a lock or a
// serialization conflict.
bool unavailable_state(std::string_view state) {
    if (state.empty()) return true;  // no answer from the server: the connection failed
    const auto cls = state.substr(0, 2);
    return cls == "08" || cls == "53" || cls == "57" || cls == "40" || state == "25006" ||
           state == "55P03" || state == "58030";
}

// libpq's message on one line: its lines (a hint after a newline and a tab) joined by "; ".
std::string trimmed(const char* message) {
    std::string m;
    bool line_break = false;
    for (const char* p = message ? message : ""; *p; ++p) {
        if (*p == '\n' || *p == '\r') {
            line_break = true;
        } else if (line_break && (*p == '\t' || *p == ' ')) {
            continue;
        } else {
            if (line_break && !m.empty()) m += "; ";
            line_break = false;
            m += *p;
        }
    }
    while (!m.empty() && m.back() == ' ') m.pop_back();
    return m;
}

}  // namespace

pg_error::pg_error(std::string sqlstate, const std::string& what)
    : database_error(what, unavailable_state(sqlstate)), sqlstate_(std::move(sqlstate)) {}

param text_param(std::string_view v) { return std::string(v); }
param int_param(std::int64_t v) { return std::to_string(v); }
param opt_int_param(const std::optional<std::int64_t>& v) {
    if (!v) return std::nullopt;
    return std::to_string(*v);
}
param float_param(double v) {
    char buf[32];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, p);
}
param bool_param(bool v) { return std::string(v ? "t" : "f"); }
param bytes_param(std::string_view v) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 + v.size() * 2);
    out += "\\x";
    for (unsigned char c : v) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

namespace {

void append_element(std::string& out, std::string_view v) {
    // Quoted, with backslashes and quotes escaped: any text goes through.
    out += '"';
    for (char c : v) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    out += '"';
}

template <class Range>
param array_literal(const Range& values) {
    std::string out = "{";
    bool first = true;
    for (std::string_view v : values) {
        if (!first) out += ',';
        first = false;
        append_element(out, v);
    }
    out += '}';
    return out;
}

}  // namespace

param text_array_param(std::span<const std::string> values) { return array_literal(values); }
param text_array_param(std::span<const std::string_view> values) { return array_literal(values); }

param array_param(std::span<const param> values) {
    std::string out = "{";
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i) out += ',';
        if (values[i])
            append_element(out, *values[i]);
        else
            out += "NULL";
    }
    out += '}';
    return out;
}

result::result(pg_result* r) : r_(r) {}
result::~result() {
    if (r_) PQclear(r_);
}
result::result(result&& o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
result& result::operator=(result&& o) noexcept {
    if (this != &o) {
        if (r_) PQclear(r_);
        r_ = std::exchange(o.r_, nullptr);
    }
    return *this;
}

int result::rows() const { return r_ ? PQntuples(r_) : 0; }

std::int64_t result::affected() const {
    if (!r_) return 0;
    const char* n = PQcmdTuples(r_);
    return n && *n ? std::strtoll(n, nullptr, 10) : 0;
}

bool result::is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }

std::string result::text(int row, int col) const {
    return std::string(PQgetvalue(r_, row, col), PQgetlength(r_, row, col));
}

std::optional<std::string> result::opt_text(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return text(row, col);
}

std::int64_t result::int64(int row, int col) const {
    const char* v = PQgetvalue(r_, row, col);
    std::int64_t n = 0;
    std::from_chars(v, v + PQgetlength(r_, row, col), n);
    return n;
}

std::optional<std::int64_t> result::opt_int64(int row, int col) const {
    if (is_null(row, col)) return std::nullopt;
    return int64(row, col);
}

double result::float64(int row, int col) const {
    const char* v = PQgetvalue(r_, row, col);
    double d = 0;
    std::from_chars(v, v + PQgetlength(r_, row, col), d);
    return d;
}

bool result::boolean(int row, int col) const { return PQgetvalue(r_, row, col)[0] == 't'; }

std::string result::bytes(int row, int col) const {
    std::size_t n = 0;
    auto* raw = reinterpret_cast<const unsigned char*>(PQgetvalue(r_, row, col));
    std::unique_ptr<unsigned char, decltype(&PQfreemem)> out(PQunescapeBytea(raw, &n), &PQfreemem);
    if (!out) throw std::bad_alloc();
    return std::string(reinterpret_cast<const char*>(out.get()), n);
}

connection::connection(const std::string& uri) {
    conn_ = PQconnectdb(uri.c_str());
    if (!conn_) throw std::bad_alloc();
    if (PQstatus(conn_) != CONNECTION_OK) {
        std::string message = trimmed(PQerrorMessage(conn_));
        PQfinish(conn_);
        conn_ = nullptr;
        throw pg_error("", "cannot connect to PostgreSQL: " + message);
    }
    // Notices (a table that exists already) are of no use in a server's log.
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
}

connection::~connection() {
    if (conn_) PQfinish(conn_);
}

bool connection::ok() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

int connection::server_version() const { return PQserverVersion(conn_); }

int connection::backend_pid() const { return PQbackendPID(conn_); }

result connection::finish(pg_result* r, std::string_view what) {
    result out(r);
    const auto status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return out;
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string message = trimmed(r ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
    if (message.empty()) message = trimmed(PQerrorMessage(conn_));
    throw pg_error(state ? state : "", std::string(what) + ": " + message);
}

void connection::exec(std::string_view sql) {
    std::string text(sql);
    finish(PQexec(conn_, text.c_str()), "PostgreSQL");
}

namespace {

struct param_arrays {
    std::vector<const char*> values;
    explicit param_arrays(std::span<const param> params) {
        values.reserve(params.size());
        for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    }
};

}  // namespace

const std::string& connection::statement(const char* sql) {
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
        std::string name = "s" + std::to_string(prepared_.size());
        finish(PQprepare(conn_, name.c_str(), sql, 0, nullptr), "PostgreSQL prepare");
        it = prepared_.emplace(sql, std::move(name)).first;
    }
    return it->second;
}

result connection::query(const char* sql, std::span<const param> params) {
    param_arrays a(params);
    const auto& name = statement(sql);
    return finish(PQexecPrepared(conn_, name.c_str(), static_cast<int>(a.values.size()),
                                 a.values.data(), nullptr, nullptr, 0),
                  "PostgreSQL");
}

result connection::query_then_commit(const char* sql, std::span<const param> params) {
    param_arrays a(params);
    const auto& name = statement(sql);
    if (PQenterPipelineMode(conn_) != 1) return finish(nullptr, "PostgreSQL pipeline");
    const bool sent =
        PQsendQueryPrepared(conn_, name.c_str(), static_cast<int>(a.values.size()), a.values.data(),
                            nullptr, nullptr, 0) == 1 &&
        PQsendQueryParams(conn_, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1 &&
        PQpipelineSync(conn_) == 1;
    // The statement's result and COMMIT's (or, after an error, PIPELINE_ABORTED), each
    // followed by a null, then the sync point; a broken connection ends the pipeline early.
    std::vector<pg_result*> got;
    struct clear_left {
        std::vector<pg_result*>& results;
        ~clear_left() {
            for (auto* r : results) PQclear(r);
        }
    } guard{got};
    for (int nulls = 0; sent && nulls <= 2;) {
        pg_result* r = PQgetResult(conn_);
        if (!r) {
            if (PQstatus(conn_) == CONNECTION_BAD) break;
            ++nulls;
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        got.push_back(r);
    }
    PQexitPipelineMode(conn_);  // refused only with results left, on a broken connection
    auto take = [&](std::size_t i) {
        return finish(i < got.size() ? std::exchange(got[i], nullptr) : nullptr, "PostgreSQL");
    };
    auto out = take(0);
    take(1);
    return out;
}

result connection::query_text(const std::string& sql, std::span<const param> params) {
    param_arrays a(params);
    return finish(PQexecParams(conn_, sql.c_str(), static_cast<int>(a.values.size()), nullptr,
                               a.values.data(), nullptr, nullptr, 0),
                  "PostgreSQL");
}

transaction::transaction(connection& db) : db_(db) { db_.exec("BEGIN"); }

transaction::~transaction() {
    if (done_ || !db_.ok()) return;
    try {
        db_.exec("ROLLBACK");
    } catch (...) {
        // The connection is broken: nothing stays of the transaction anyway.
    }
}

void transaction::commit() {
    done_ = true;
    db_.exec("COMMIT");
}

result transaction::commit_with(const char* sql, std::span<const param> params) {
    auto r = db_.query_then_commit(sql, params);
    done_ = true;
    return r;
}

}  // namespace buzzer::store::postgres
