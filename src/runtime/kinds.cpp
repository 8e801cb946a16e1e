// Turns configured kinds into registered kinds: executor, defaults, input check.
#include <boost/json.hpp>

#include "jobs/schema.hpp"
#include "runtime/config.hpp"

namespace buzzer::runtime {
namespace json = boost::json;

void register_kinds(server& s, const std::vector<kind_config>& kinds) {
    for (const auto& k : kinds) {
        input_check check;
        if (k.input) {
            auto schema = jobs::input_schema::parse(*k.input, "kinds." + k.name + ".input");
            check = [schema](const json::value& input) { schema.check(input); };
        }
        job_function fn =
            k.executor == "exec" ? jobs::make_exec_job(k.exec) : jobs::make_http_job(k.http);
        s.kind(k.name, std::move(fn), k.defaults, std::move(check), k.executor);
    }
}

}  // namespace buzzer::runtime
