#define BOOST_TEST_MODULE unit_http
#include <boost/test/unit_test.hpp>
