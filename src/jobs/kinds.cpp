#include "jobs/kinds.hpp"

namespace buzzer {

job_error::job_error(const std::string& detail, bool retryable, std::string type)
    : std::runtime_error(detail), retryable_(retryable), type_(std::move(type)) {}

namespace jobs {

void kind_registry::add(kind_def k) {
    auto name = k.name;
    kinds_.insert_or_assign(std::move(name), std::move(k));
}

const kind_def* kind_registry::find(std::string_view name) const {
    auto it = kinds_.find(name);
    return it == kinds_.end() ? nullptr : &it->second;
}

std::vector<const kind_def*> kind_registry::all() const {
    std::vector<const kind_def*> out;
    out.reserve(kinds_.size());
    for (const auto& [name, k] : kinds_) out.push_back(&k);
    return out;
}

}  // namespace jobs
}  // namespace buzzer
