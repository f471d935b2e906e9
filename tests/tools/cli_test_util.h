// The in-process command runner the command tests share: `cli({"train", "--steps", "2"})` runs
// `ssmtune train --steps 2` through tools::run_cli and returns its exit status (0 ok, 1 error, 2 usage);
// `cli_captured` also returns what the command wrote to fd 1 (stdout) or 2 (stderr).
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

// {exit status, what it wrote to `fd`} of the command, run in-process with fd 1 (stdout) or 2 (stderr) sent to a file.
inline std::pair<int, std::string> cli_captured(const std::vector<std::string>& args, int fd) {
    const std::filesystem::path cap = std::filesystem::temp_directory_path() /
        ("ssmtune_fd" + std::to_string(fd) + "_" + std::to_string(static_cast<long>(::getpid())));
    FILE* stream = fd == 1 ? stdout : stderr;
    std::fflush(stream);
    const int saved = ::dup(fd);
    FILE* f = std::fopen(cap.c_str(), "w");
    ::dup2(::fileno(f), fd);
    const int status = cli(args);
    std::fflush(stream);
    ::dup2(saved, fd);
    ::close(saved);
    std::fclose(f);
    std::stringstream text;
    text << std::ifstream(cap).rdbuf();
    std::filesystem::remove(cap);
    return {status, text.str()};
}

}  // namespace ssmtune::testing
