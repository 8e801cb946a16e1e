#define BOOST_TEST_MODULE unit_store
#include <boost/test/unit_test.hpp>
