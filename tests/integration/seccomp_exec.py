"""Runs a program with io_uring_setup refused (EPERM) by a seccomp filter, as the default
seccomp profiles of Docker and containerd do:  seccomp_exec.py PROGRAM [ARGS...]"""

import ctypes
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
NR_IO_URING_SETUP = 425  # the same number on every architecture (asm-generic table)


def block_io_uring_setup():
    def insn(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)
    program = b"".join([
        insn(0x20, 0, 0, 0),                      # A = seccomp_data.nr
        insn(0x15, 0, 1, NR_IO_URING_SETUP),      # if A == io_uring_setup
        insn(0x06, 0, 0, SECCOMP_RET_ERRNO | EPERM),  # then fail with EPERM
        insn(0x06, 0, 0, SECCOMP_RET_ALLOW),      # else allow
    ])
    buf = ctypes.create_string_buffer(program)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    block_io_uring_setup()
    os.execv(sys.argv[1], sys.argv[1:])
