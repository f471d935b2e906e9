// The `ssmtune` program, called in-process: exit statuses for the happy paths and for usage mistakes.
#include "test_util.h"
#include "tests/tools/cli_test_util.h"

#include "tools/commands.h"

using namespace ssmtune;
using ssmtune::testing::cli;

TEST_CASE("cli prints usage and version") {
    CHECK(cli({}) == 0);
    CHECK(cli({"--version"}) == 0);
    CHECK(cli({"--help"}) == 0);
    CHECK(cli({"demo", "--help"}) == 0);
}

TEST_CASE("cli demo trains the MLP and converges") { CHECK(cli({"demo", "--seed", "3"}) == 0); }

TEST_CASE("cli usage mistakes exit with status 2") {
    CHECK(cli({"frobnicate"}) == 2);
    CHECK(cli({"demo", "--steps"}) == 2);
    CHECK(cli({"demo", "--steps", "ten"}) == 2);
    CHECK(cli({"demo", "--bogus", "1"}) == 2);
    CHECK(cli({"demo", "--lr", "-1"}) == 2);
    CHECK(cli({"demo", "stray"}) == 2);
}
