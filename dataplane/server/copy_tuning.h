#pragma once

// Large memory copies on AMD CPUs. glibc (2.36 in Debian 12) copies blocks from 4 KiB (its
// x86_rep_movsb_threshold with AVX2) up to its non-temporal threshold with the `rep movsb`
// instruction. On AMD Zen 3 and later that instruction runs well below the speed of glibc's
// own vector loop, most of all when source and destination are not aligned alike: the usual
// case for a TLS record's plaintext (OpenSSL copies every byte the node writes) and for an
// HTTP/2 DATA frame. On the project's AMD EPYC machine (family 25), with rep movsb off the
// node spent half the memmove CPU per 4 KiB HTTP/2 request and a quarter per 64 KiB one
// (docs/architecture.md, "Memory copies").
//
// glibc reads that threshold from GLIBC_TUNABLES when a process starts, never later. So on
// such a CPU the node runs itself again, once, first thing in main, with the tunable added.
// It does not when GLIBC_TUNABLES already names the tunable (the operator's value wins), with
// ONEDOMAIN_COPY_TUNING=off, with LD_PRELOAD set (valgrind would let the new process run
// without it; heaptrack; another allocator), in secure-execution mode (setuid or file
// capabilities: glibc ignores the tunable there), without ERMS (glibc takes no rep movsb
// then), or on other CPU vendors (not measured). The re-executed process finds
// ONEDOMAIN_COPY_TUNING=applied and never does it again.

#include <string>

namespace onedomain::dataplane {

// Re-executes the binary (/proc/self/exe's target) with `argv` and the tunable when it is wanted
// (see above), and returns when the process goes on as it is: not wanted, already set, or the
// re-exec failed (CopySummary says so). Call before anything else: no thread may exist yet.
void ReexecForVectorCopies(char** argv);

// For the startup log: "memory copies: GLIBC_TUNABLES glibc.cpu.x86_rep_movsb_threshold=N"
// (set by the re-exec or by the operator), "memory copies: glibc's defaults", or why not.
std::string CopySummary();

}  // namespace onedomain::dataplane
