// Asio's TLS layer, compiled once (separate compilation, as src/core/asio_impl.cpp does for
// the rest of Asio): only the bench uses it, the server has a TLS stream of its own.
#include <boost/asio/ssl/impl/src.hpp>
