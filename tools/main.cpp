// The `ssmtune` executable: everything lives in run_cli (tools/cli.cpp) so tests can call it in-process.
#include "tools/commands.h"

int main(int argc, char** argv) { return ssmtune::tools::run_cli(argc, argv); }
