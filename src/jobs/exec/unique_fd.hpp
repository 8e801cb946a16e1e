// An owned file descriptor, for the exec executor's pipes, /proc reads and result files.
#pragma once

#include <unistd.h>

#include <utility>

namespace buzzer::jobs::exec {

/// Closes its descriptor when destroyed; movable, not copyable.
class unique_fd {
  public:
    /// No descriptor.
    unique_fd() = default;
    /// Takes ownership of `fd` (which may be -1).
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    /// Takes `o`'s descriptor; `o` is left empty.
    unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    /// Closes the current descriptor and takes `o`'s.
    unique_fd& operator=(unique_fd&& o) noexcept {
        reset(std::exchange(o.fd_, -1));
        return *this;
    }
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    /// Closes the descriptor, if any.
    ~unique_fd() { reset(); }

    /// The descriptor, or -1.
    [[nodiscard]] int get() const noexcept { return fd_; }
    /// Gives the descriptor up without closing it.
    int release() noexcept { return std::exchange(fd_, -1); }
    /// Closes the current descriptor and takes `fd`.
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

  private:
    int fd_ = -1;
};

}  // namespace buzzer::jobs::exec
