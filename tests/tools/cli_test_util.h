// The in-process command runner the command tests share: `cli({"train", "--steps", "2"})` runs
// `ssmtune train --steps 2` through tools::run_cli and returns its exit status (0 ok, 1 error, 2 usage).
#pragma once

#include <string>
#include <vector>

#include "tools/commands.h"

namespace ssmtune::testing {

inline int cli(std::vector<std::string> args) {
    args.insert(args.begin(), "ssmtune");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    return tools::run_cli(int(argv.size()), argv.data());
}

}  // namespace ssmtune::testing
