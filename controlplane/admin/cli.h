#pragma once

// `controlplane admin [--server ADDR] [--token-file F] [--ca-file F] [-o table|json] VERB ...`
// A thin client over the Admin gRPC service. Exit codes: 0 done; 1 other error; 2 usage;
// 3 invalid argument / not found; 4 unauthenticated / permission denied; 5 conflict
// (expected_version); 6 control plane unreachable.

namespace onedomain::controlplane {

// `args` are the words after "admin". Prints to stdout/stderr and returns the exit code.
int RunAdminCli(int argc, char** argv);

void PrintAdminUsage();

}  // namespace onedomain::controlplane
