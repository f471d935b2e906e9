// The in-process command runner the command tests share: `cli({"train", "--steps", "2"})` runs
// `ssmtune train --steps 2` through tools::run_cli and returns its exit status (0 ok, 1 error, 2 usage);
// `cli_stdout` also returns what the command printed on standard output.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tools/commands.h"

namespace ssmtune::testing {

inline int cli(std::vector<std::string> args) {
    args.insert(args.begin(), "ssmtune");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    return tools::run_cli(int(argv.size()), argv.data());
}

// {exit status, standard output} of the command, run in-process with fd 1 sent to a file.
inline std::pair<int, std::string> cli_stdout(const std::vector<std::string>& args) {
    const std::filesystem::path cap =
        std::filesystem::temp_directory_path() / ("ssmtune_stdout_" + std::to_string(static_cast<long>(::getpid())));
    std::fflush(stdout);
    const int saved = ::dup(1);
    FILE* f = std::fopen(cap.c_str(), "w");
    ::dup2(::fileno(f), 1);
    const int status = cli(args);
    std::fflush(stdout);
    ::dup2(saved, 1);
    ::close(saved);
    std::fclose(f);
    std::stringstream text;
    text << std::ifstream(cap).rdbuf();
    std::filesystem::remove(cap);
    return {status, text.str()};
}

}  // namespace ssmtune::testing
