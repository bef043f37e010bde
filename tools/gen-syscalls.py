#!/usr/bin/env python3
"""Generate phantom-dsl/src/syscalls/{x86_64,aarch64,i386,x32}.rs.

The tables are read from the Linux UAPI headers of Debian's linux-libc-dev,
found under an include root (--include-root DIR, default /usr/include):

  x86_64   DIR/x86_64-linux-gnu/asm/unistd_64.h
  i386     DIR/x86_64-linux-gnu/asm/unistd_32.h
  x32      DIR/x86_64-linux-gnu/asm/unistd_x32.h
           (numbers include __X32_SYSCALL_BIT = 0x40000000; the full number
           is stored)
  aarch64  DIR/asm-generic/unistd.h
           evaluated the way arch/arm64/include/uapi/asm/unistd.h includes it:
           __BITS_PER_LONG == 64, no __SYSCALL_COMPAT, no __ARCH_NOMMU, and
           __ARCH_WANT_{RENAMEAT,NEW_STAT,SET_GET_RLIMIT,SYS_CLONE3,
           MEMFD_SECRET} defined.  (__ARCH_WANT_TIME32_SYSCALLS makes no
           difference for a 64-bit table: every block it guards is also
           enabled by `__BITS_PER_LONG != 32`.)
           Since trixie, linux-libc-dev is Architecture: all and also ships
           DIR/aarch64-linux-gnu/asm/unistd_64.h, the flat list the kernel
           generates for arm64.  When that file exists the evaluated table
           must equal it exactly, or nothing is written.

Which headers
-------------
The checked-in tables come from linux-libc-dev 7.3.4-1~bpo13+1
(trixie-backports), i.e. the UAPI headers of Linux 7.3.4.  Bookworm's own
linux-libc-dev (/usr/include on the build machine) is Linux 6.1 and lacks
everything from cachestat (451) on, as well as uretprobe (335) and uprobe
(336) on x86_64; the spot checks below therefore refuse it.  The headers
must be Linux 6.13 or newer (the *xattrat calls, 463-466, are named by
Docker's default seccomp profile).

The newer package is downloaded and unpacked under /tmp; the machine's apt
configuration and its installed linux-libc-dev are left alone (apt is
pointed at a temporary sources list, list directory and cache).  The mirror
is the one the machine already uses, taken from its deb822 sources file.
From the repository root:

  A=/tmp/apt-newhdr; mkdir -p $A/lists/partial $A/cache/archives/partial $A/parts
  M=$(sed -n 's|^URIs: *\(.*/debian\)$|\1|p' /etc/apt/sources.list.d/debian.sources | head -n1)
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $M trixie-backports main" > $A/sources.list
  O="-o Dir::Etc::sourcelist=$A/sources.list -o Dir::Etc::sourceparts=$A/parts -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache"
  apt-get $O update
  (cd $A && apt-get $O download 'linux-libc-dev=7.3.4-1~bpo13+1')
  dpkg-deb -x $A/linux-libc-dev_7.3.4-1~bpo13+1_*.deb '/tmp/linux-libc-dev-7.3.4-1~bpo13+1'
  python3 tools/gen-syscalls.py --include-root '/tmp/linux-libc-dev-7.3.4-1~bpo13+1/usr/include'

(`apt-cache $O policy linux-libc-dev` lists the versions that source
offers; apt may warn that the download runs unsandboxed as root because
_apt cannot write to $A, which is harmless.)  Another version works the same
way: replace the suite and the version.  The generated files record the
kernel version (DIR/linux/version.h) and the Debian package version and
suite (the first line of DIR/../share/doc/linux-libc-dev/changelog.Debian.gz,
which dpkg-deb -x unpacks too; for /usr/include `dpkg-query` is asked if
that file is missing), and each repeats the commands above for its version.

Parsing
-------
Only the x86 headers (and the arm64 unistd_64.h) are simple
`#define __NR_name number` lists.  The generic header is a small
preprocessor program, so this script carries a minimal evaluator for the
directives it uses (#if/#ifdef/#ifndef/#elif/#else/#endif/#define/#undef
with defined(), !, &&, ||, ==, !=, <, >, <=, >=, +, -, integer literals and
object-like macros).  A number is a syscall of the generic table exactly
when it is passed to one of __SYSCALL, __SC_3264, __SC_COMP or
__SC_COMP_3264 in an enabled block; this leaves out __NR_syscalls,
__NR_arch_specific_syscall and the unassigned ranges.  __NR3264_foo numbers
are named after the `#define __NR_bar __NR3264_foo` alias that the 64-bit
branch at the end of the header defines (e.g. __NR3264_fstatat ->
newfstatat, __NR3264_mmap -> mmap).

Checks (any failure: error, exit 2, nothing written): spot checks of known
numbers per table (including new ones such as cachestat = 451 and
mseal = 462), names that must be absent from aarch64, unique numbers per
table, the aarch64 cross-check above, and the unified range: from 424 on
every architecture uses the same number for a syscall, so a name present in
two tables there must have the same number (x32 less __X32_SYSCALL_BIT) in
both, and a number in that range must name the same syscall in both.

Usage:  python3 tools/gen-syscalls.py [--check] [--include-root DIR]
  --check              do not write; exit 1 if a generated file would change.
  --include-root DIR   the UAPI include directory (default: /usr/include).

Python 3 standard library only.
"""

import argparse
import gzip
import os
import re
import subprocess
import sys

DEFAULT_INCLUDE_ROOT = "/usr/include"

X32_SYSCALL_BIT = 0x40000000

# From this number on, syscall numbers are the same on every architecture
# (Linux 5.1, pidfd_send_signal).
UNIFIED_FROM = 424

# The configuration under which arm64 includes <asm-generic/unistd.h>.
AARCH64_DEFINES = {
    "__BITS_PER_LONG": "64",
    "__ARCH_WANT_RENAMEAT": "",
    "__ARCH_WANT_NEW_STAT": "",
    "__ARCH_WANT_SET_GET_RLIMIT": "",
    "__ARCH_WANT_SYS_CLONE3": "",
    "__ARCH_WANT_MEMFD_SECRET": "",
    # Deliberately absent: __SYSCALL_COMPAT, __ARCH_NOMMU, __ARCH_WANT_STAT64,
    # __ARCH_WANT_SYNC_FILE_RANGE2, __ARCH_WANT_TIME32_SYSCALLS.
}

# The macros that register a syscall number in the generic table.  The first
# argument is always the __NR_* / __NR3264_* macro holding the number.
SYSCALL_MACROS = ("__SYSCALL", "__SC_3264", "__SC_COMP", "__SC_COMP_3264")

# Header paths relative to the include root.
X86_64_HEADER = "x86_64-linux-gnu/asm/unistd_64.h"
I386_HEADER = "x86_64-linux-gnu/asm/unistd_32.h"
X32_HEADER = "x86_64-linux-gnu/asm/unistd_x32.h"
GENERIC_HEADER = "asm-generic/unistd.h"
ARM64_FLAT_HEADER = "aarch64-linux-gnu/asm/unistd_64.h"
VERSION_HEADER = "linux/version.h"

OUT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "phantom-dsl",
    "src",
    "syscalls",
)


class GenError(Exception):
    pass


# --------------------------------------------------------------------------
# Tiny C preprocessor expression evaluator
# --------------------------------------------------------------------------

TOKEN_RE = re.compile(
    r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|([A-Za-z_]\w*)|(\|\||&&|==|!=|<=|>=|[!()<>+\-]))"
)


def tokenize(expr):
    tokens = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            raise GenError("cannot tokenize %r at %r" % (expr, expr[pos:]))
        if m.group(1):
            tokens.append(("num", int(m.group(1), 0)))
        elif m.group(2):
            tokens.append(("id", m.group(2)))
        else:
            tokens.append(("op", m.group(3)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return tokens


class ExprParser:
    """Recursive descent over the C operator subset used by the headers."""

    def __init__(self, tokens, macros, depth=0):
        self.toks = tokens
        self.i = 0
        self.macros = macros
        self.depth = depth

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            raise GenError("unexpected token %r (wanted %s %s)" % (tok, kind, value))
        self.i += 1
        return tok

    def parse(self):
        v = self.logical_or()
        if self.i != len(self.toks):
            raise GenError("trailing tokens %r" % (self.toks[self.i:],))
        return v

    def logical_or(self):
        v = self.logical_and()
        while self.peek() == ("op", "||"):
            self.take()
            rhs = self.logical_and()
            v = 1 if (v or rhs) else 0
        return v

    def logical_and(self):
        v = self.equality()
        while self.peek() == ("op", "&&"):
            self.take()
            rhs = self.equality()
            v = 1 if (v and rhs) else 0
        return v

    def equality(self):
        v = self.relational()
        while self.peek() in (("op", "=="), ("op", "!=")):
            op = self.take()[1]
            rhs = self.relational()
            v = int(v == rhs) if op == "==" else int(v != rhs)
        return v

    def relational(self):
        v = self.additive()
        while self.peek() in (("op", "<"), ("op", ">"), ("op", "<="), ("op", ">=")):
            op = self.take()[1]
            rhs = self.additive()
            v = int({"<": v < rhs, ">": v > rhs, "<=": v <= rhs, ">=": v >= rhs}[op])
        return v

    def additive(self):
        v = self.unary()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            rhs = self.unary()
            v = v + rhs if op == "+" else v - rhs
        return v

    def unary(self):
        tok = self.peek()
        if tok == ("op", "!"):
            self.take()
            return int(not self.unary())
        if tok == ("op", "-"):
            self.take()
            return -self.unary()
        if tok == ("op", "+"):
            self.take()
            return self.unary()
        return self.primary()

    def primary(self):
        kind, val = self.take()
        if kind == "num":
            return val
        if kind == "op" and val == "(":
            v = self.logical_or()
            self.take("op", ")")
            return v
        if kind == "id":
            if val == "defined":
                if self.peek() == ("op", "("):
                    self.take()
                    name = self.take("id")[1]
                    self.take("op", ")")
                else:
                    name = self.take("id")[1]
                return int(name in self.macros)
            if val in self.macros:
                return evaluate(self.macros[val], self.macros, self.depth + 1)
            return 0  # undefined identifiers are 0 in #if, as in cpp
        raise GenError("unexpected token %r" % ((kind, val),))


def evaluate(expr, macros, depth=0):
    if depth > 32:
        raise GenError("macro recursion too deep evaluating %r" % expr)
    if expr.strip() == "":
        raise GenError("empty expression")
    return ExprParser(tokenize(expr), macros, depth).parse()


# --------------------------------------------------------------------------
# Source handling
# --------------------------------------------------------------------------


def logical_lines(path):
    """Yield (lineno, text) with comments removed and continuations joined."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    # Strip /* */ comments but keep newlines so line numbers stay right.
    src = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    lines = src.split("\n")
    i = 0
    while i < len(lines):
        start = i + 1
        text = lines[i]
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i]
        i += 1
        yield start, text.strip()


DIRECTIVE_RE = re.compile(r"^#\s*(\w+)\s*(.*)$")
DEFINE_RE = re.compile(r"^([A-Za-z_]\w*)(\([^)]*\))?\s*(.*)$")
INVOCATION_RE = re.compile(r"^(%s)\s*\((.*)\)\s*;?$" % "|".join(SYSCALL_MACROS))


def parse_generic(path, predefined):
    """Evaluate asm-generic/unistd.h; return {name: number} for the 64-bit ABI."""
    macros = dict(predefined)
    func_macros = set()
    # Stack of (parent_active, this_branch_active, some_branch_taken).
    stack = []
    active = True
    registered = []  # (macro_name, lineno) passed to a __SYSCALL-like macro

    for lineno, line in logical_lines(path):
        if not line:
            continue
        m = DIRECTIVE_RE.match(line)
        if m:
            d, rest = m.group(1), m.group(2).strip()
            where = "%s:%d" % (path, lineno)
            if d in ("if", "ifdef", "ifndef"):
                if not active:
                    cond = False
                elif d == "if":
                    cond = bool(evaluate(rest, macros))
                elif d == "ifdef":
                    cond = rest.split()[0] in macros
                else:
                    cond = rest.split()[0] not in macros
                stack.append((active, cond, cond))
                active = active and cond
            elif d == "elif":
                if not stack:
                    raise GenError("%s: #elif without #if" % where)
                parent, _, taken = stack[-1]
                cond = (not taken) and parent and bool(evaluate(rest, macros))
                stack[-1] = (parent, cond, taken or cond)
                active = parent and cond
            elif d == "else":
                if not stack:
                    raise GenError("%s: #else without #if" % where)
                parent, _, taken = stack[-1]
                stack[-1] = (parent, not taken, True)
                active = parent and not taken
            elif d == "endif":
                if not stack:
                    raise GenError("%s: #endif without #if" % where)
                active = stack.pop()[0]
            elif not active:
                pass
            elif d == "define":
                dm = DEFINE_RE.match(rest)
                if not dm:
                    raise GenError("%s: bad #define %r" % (where, rest))
                name, params, body = dm.groups()
                if params is not None:
                    func_macros.add(name)
                else:
                    macros[name] = body.strip()
            elif d == "undef":
                macros.pop(rest.split()[0], None)
                func_macros.discard(rest.split()[0])
            elif d == "include":
                pass  # only <asm/bitsperlong.h>; __BITS_PER_LONG is predefined
            else:
                raise GenError("%s: unhandled directive #%s" % (where, d))
            continue
        if not active:
            continue
        im = INVOCATION_RE.match(line)
        if im:
            first = im.group(2).split(",")[0].strip()
            if not re.match(r"^__NR(3264)?_\w+$", first):
                raise GenError("%s:%d: unexpected syscall macro argument %r" % (path, lineno, first))
            registered.append((first, lineno))
            continue
        raise GenError("%s:%d: unrecognised line %r" % (path, lineno, line))

    if stack:
        raise GenError("%s: unterminated #if" % path)

    # Map __NR3264_foo to the __NR_ alias the 64-bit branch gave it.
    alias = {}
    for name, body in macros.items():
        if name.startswith("__NR_") and re.match(r"^__NR3264_\w+$", body):
            if body in alias:
                raise GenError("two aliases for %s: %s, %s" % (body, alias[body], name))
            alias[body] = name

    table = {}
    for macro, lineno in registered:
        if macro not in macros:
            raise GenError("%s:%d: %s registered but not defined" % (path, lineno, macro))
        nr = evaluate(macros[macro], macros)
        if macro.startswith("__NR3264_"):
            if macro not in alias:
                raise GenError("%s has no 64-bit __NR_ alias" % macro)
            name = alias[macro][len("__NR_"):]
        else:
            name = macro[len("__NR_"):]
        add(table, name, nr, "%s:%d" % (path, lineno))
    return table


def parse_flat(path, predefined):
    """Parse an x86 unistd_{64,32,x32}.h: a flat list of __NR_ defines."""
    macros = dict(predefined)
    table = {}
    for lineno, line in logical_lines(path):
        m = DIRECTIVE_RE.match(line)
        if not m:
            if line:
                raise GenError("%s:%d: unrecognised line %r" % (path, lineno, line))
            continue
        d, rest = m.group(1), m.group(2).strip()
        if d in ("ifndef", "endif"):
            continue  # the include guard only
        if d != "define":
            raise GenError("%s:%d: unhandled directive #%s" % (path, lineno, d))
        dm = DEFINE_RE.match(rest)
        name, params, body = dm.groups()
        if params is not None or not name.startswith("__NR_"):
            continue  # the include guard macro
        nr = evaluate(body, macros)
        add(table, name[len("__NR_"):], nr, "%s:%d" % (path, lineno))
    return table


def add(table, name, nr, where):
    if not re.match(r"^[a-z_][a-z0-9_]*$", name):
        raise GenError("%s: odd syscall name %r" % (where, name))
    if not 0 <= nr < 2**32:
        raise GenError("%s: %s = %d out of u32 range" % (where, name, nr))
    if name in table and table[name] != nr:
        raise GenError("%s: %s defined twice (%d, %d)" % (where, name, table[name], nr))
    table[name] = nr


# --------------------------------------------------------------------------
# Where the headers came from
# --------------------------------------------------------------------------


def kernel_version(root):
    """The kernel version of the UAPI headers under root, from linux/version.h."""
    path = os.path.join(root, VERSION_HEADER)
    if not os.path.exists(path):
        raise GenError("%s: no such file; cannot tell the headers' kernel version" % path)
    values = {}
    for _, line in logical_lines(path):
        m = re.match(r"^#\s*define\s+(LINUX_VERSION_\w+)\s+(\d+)$", line)
        if m:
            values[m.group(1)] = int(m.group(2))
    parts = ("LINUX_VERSION_MAJOR", "LINUX_VERSION_PATCHLEVEL", "LINUX_VERSION_SUBLEVEL")
    if all(p in values for p in parts):
        return "%d.%d.%d" % tuple(values[p] for p in parts)
    if "LINUX_VERSION_CODE" in values:
        code = values["LINUX_VERSION_CODE"]
        return "%d.%d.%d" % (code >> 16, (code >> 8) & 0xFF, code & 0xFF)
    raise GenError("%s: no LINUX_VERSION_* defines" % path)


def debian_package(root):
    """(version, suite) of the linux-libc-dev that put the headers under root.

    Read from the first line of the package's changelog.Debian.gz beside the
    include root (dpkg-deb -x unpacks it too); for /usr/include without that
    file, dpkg-query is asked (suite None).  (None, None) if neither works.
    """
    changelog = os.path.normpath(os.path.join(
        root, "..", "share", "doc", "linux-libc-dev", "changelog.Debian.gz"))
    if os.path.exists(changelog):
        with gzip.open(changelog, "rt", encoding="utf-8") as f:
            first = f.readline()
        m = re.match(r"^linux \(([^()\s]+)\) ([A-Za-z0-9.+-]+)[ ;]", first)
        if not m:
            raise GenError("%s: unexpected first line %r" % (changelog, first))
        return m.group(1), m.group(2)
    if os.path.realpath(root) == os.path.realpath(DEFAULT_INCLUDE_ROOT):
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", "linux-libc-dev"],
                capture_output=True, text=True, check=True).stdout.strip()
            if out:
                return out, None
        except (OSError, subprocess.CalledProcessError):
            pass
    return None, None


def header_info(root):
    kernel = kernel_version(root)
    version, suite = debian_package(root)
    if version is not None:
        upstream = version.split(":")[-1].rsplit("-", 1)[0].split("~")[0]
        if upstream not in (kernel, re.sub(r"\.0$", "", kernel)):
            raise GenError(
                "%s: linux/version.h says Linux %s but the package is linux-libc-dev %s; "
                "are these headers from two packages?" % (root, kernel, version))
    return {"root": root, "kernel": kernel, "version": version, "suite": suite}


def reproduction(info):
    """Shell commands (run from the repository root) that regenerate the tables."""
    version, suite = info["version"], info["suite"]
    if version is None or suite is None:
        if os.path.realpath(info["root"]) == os.path.realpath(DEFAULT_INCLUDE_ROOT):
            return ["python3 tools/gen-syscalls.py"]
        return ["python3 tools/gen-syscalls.py --include-root '%s'" % info["root"]]
    archive = "debian-security" if suite.endswith("-security") else "debian"
    unpacked = "/tmp/linux-libc-dev-%s" % version
    return [
        "A=/tmp/apt-newhdr; mkdir -p $A/lists/partial $A/cache/archives/partial $A/parts",
        r"M=$(sed -n 's|^URIs: *\(.*/%s\)$|\1|p' /etc/apt/sources.list.d/debian.sources"
        " | head -n1)" % archive,
        'echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $M %s main"'
        " > $A/sources.list" % suite,
        'O="-o Dir::Etc::sourcelist=$A/sources.list -o Dir::Etc::sourceparts=$A/parts'
        ' -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache"',
        "apt-get $O update",
        "(cd $A && apt-get $O download 'linux-libc-dev=%s')" % version,
        "dpkg-deb -x $A/linux-libc-dev_%s_*.deb '%s'" % (version, unpacked),
        "python3 tools/gen-syscalls.py --include-root '%s/usr/include'" % unpacked,
    ]


# --------------------------------------------------------------------------
# Checks and output
# --------------------------------------------------------------------------

# Known numbers.  The entries from uretprobe/cachestat on need headers of
# Linux 6.13 or newer (setxattrat..removexattrat were added in 6.13).
SPOT_CHECKS = {
    "x86_64": {"read": 0, "write": 1, "open": 2, "execve": 59, "openat": 257,
               "exit_group": 231, "clone3": 435, "openat2": 437,
               "uretprobe": 335, "cachestat": 451, "fchmodat2": 452,
               "map_shadow_stack": 453, "futex_wake": 454, "futex_wait": 455,
               "futex_requeue": 456, "statmount": 457, "listmount": 458,
               "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
               "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463,
               "getxattrat": 464, "listxattrat": 465, "removexattrat": 466},
    "aarch64": {"io_setup": 0, "openat": 56, "close": 57, "read": 63, "write": 64,
                "newfstatat": 79, "fstat": 80, "exit_group": 94, "clone": 220,
                "execve": 221, "mmap": 222, "clone3": 435, "openat2": 437,
                "fcntl": 25, "statfs": 43, "fstatfs": 44, "truncate": 45,
                "ftruncate": 46, "lseek": 62, "sendfile": 71, "fadvise64": 223,
                "renameat": 38, "getrlimit": 163, "setrlimit": 164,
                "sync_file_range": 84, "memfd_secret": 447,
                "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453,
                "futex_wait": 455, "statmount": 457, "lsm_list_modules": 461,
                "mseal": 462, "setxattrat": 463, "removexattrat": 466},
    "i386": {"exit": 1, "read": 3, "write": 4, "open": 5, "execve": 11,
             "socketcall": 102, "mmap2": 192, "openat": 295, "clone3": 435,
             "cachestat": 451, "mseal": 462, "setxattrat": 463},
    "x32": {"read": X32_SYSCALL_BIT + 0, "execve": X32_SYSCALL_BIT + 520,
            "openat": X32_SYSCALL_BIT + 257, "clone3": X32_SYSCALL_BIT + 435,
            "uretprobe": X32_SYSCALL_BIT + 335, "cachestat": X32_SYSCALL_BIT + 451,
            "mseal": X32_SYSCALL_BIT + 462, "setxattrat": X32_SYSCALL_BIT + 463},
}

# Names that must not appear (64-bit generic table has no legacy/32-bit names;
# the uprobe calls are x86_64-only).
ABSENT = {
    "aarch64": ["open", "stat", "lstat", "fork", "vfork", "mmap2", "fcntl64",
                "fstatat64", "llseek", "clock_gettime64", "sync_file_range2",
                "syscalls", "arch_specific_syscall", "uretprobe", "uprobe"],
    "i386": ["uretprobe", "uprobe"],
}


def check(arch, table, info):
    for name, nr in SPOT_CHECKS.get(arch, {}).items():
        if table.get(name) != nr:
            raise GenError(
                "%s: expected %s = %d, got %r (headers: Linux %s under %s; Linux 6.13 or "
                "newer is needed, see the top of tools/gen-syscalls.py for --include-root)"
                % (arch, name, nr, table.get(name), info["kernel"], info["root"]))
    for name in ABSENT.get(arch, []):
        if name in table:
            raise GenError("%s: %s should not be present" % (arch, name))
    by_nr = {}
    for name, nr in table.items():
        if nr in by_nr:
            raise GenError("%s: %s and %s share number %d" % (arch, by_nr[nr], name, nr))
        by_nr[nr] = name


def unified_number(arch, nr):
    """nr without the x32 bit if it lies in the range shared by every arch.

    The shared range starts at 424; x32's own compat calls at 512..547 (which
    the kernel keeps free of new syscalls) are not part of it.
    """
    if arch == "x32":
        nr &= ~X32_SYSCALL_BIT
    return nr if UNIFIED_FROM <= nr < 512 else None


def check_unified(tables):
    arches = sorted(tables)
    for i, a in enumerate(arches):
        for b in arches[i + 1:]:
            ta, tb = tables[a], tables[b]
            for name in set(ta) & set(tb):
                ua, ub = unified_number(a, ta[name]), unified_number(b, tb[name])
                if (ua is not None or ub is not None) and ua != ub:
                    raise GenError("%s has number %#x on %s but %#x on %s"
                                   % (name, ta[name], a, tb[name], b))
            na = {unified_number(a, nr): name for name, nr in ta.items()}
            nb = {unified_number(b, nr): name for name, nr in tb.items()}
            for nr in set(na) & set(nb) - {None}:
                if na[nr] != nb[nr]:
                    raise GenError("number %d is %s on %s but %s on %s"
                                   % (nr, na[nr], a, nb[nr], b))


def render(arch, source, table, info, cross_checked):
    out = [
        "// @generated by tools/gen-syscalls.py -- do not edit.",
        "//",
        "// Syscall names and numbers for %s, sorted by name (%d entries)." % (arch, len(table)),
        "// Read from %s of the Linux %s UAPI headers" % (source, info["kernel"]),
    ]
    if info["version"] is None:
        out[-1] += "."
    elif info["suite"] is None:
        out.append("// (Debian package linux-libc-dev %s)." % info["version"])
    else:
        out.append("// (Debian package linux-libc-dev %s, suite %s)."
                   % (info["version"], info["suite"]))
    if arch == "aarch64":
        out.append("// Evaluated as arm64 includes it: __BITS_PER_LONG == 64, no __SYSCALL_COMPAT,")
        out.append("// __ARCH_WANT_{RENAMEAT,NEW_STAT,SET_GET_RLIMIT,SYS_CLONE3,MEMFD_SECRET}.")
        if cross_checked:
            out.append("// Checked to equal %s of the same package." % ARM64_FLAT_HEADER)
    if arch == "x32":
        out.append("// Numbers include __X32_SYSCALL_BIT (0x40000000).")
    out.append("//")
    out.append("// To reproduce, from the repository root (everything is downloaded to and")
    out.append("// unpacked in /tmp; apt's configuration and the installed linux-libc-dev")
    out.append("// are not changed):")
    out.append("//")
    for cmd in reproduction(info):
        out.append("//   " + cmd)
    out.append("")
    out.append("pub(super) static TABLE: &[(&str, u32)] = &[")
    for name in sorted(table):
        nr = table[name]
        if arch == "x32":
            out.append('    ("%s", 0x%08x),' % (name, nr))
        else:
            out.append('    ("%s", %d),' % (name, nr))
    out.append("];")
    return "\n".join(out) + "\n"


def main(argv):
    ap = argparse.ArgumentParser(
        prog="gen-syscalls.py",
        description="Generate phantom-dsl/src/syscalls/*.rs from Linux UAPI headers.")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if a generated file would change")
    ap.add_argument("--include-root", metavar="DIR", default=DEFAULT_INCLUDE_ROOT,
                    help="the UAPI include directory (default: %(default)s)")
    args = ap.parse_args(argv[1:])
    root = args.include_root
    if not os.path.isdir(root):
        raise GenError("%s: not a directory" % root)

    info = header_info(root)
    bit = {"__X32_SYSCALL_BIT": str(X32_SYSCALL_BIT)}
    jobs = [
        ("x86_64", X86_64_HEADER, lambda p: parse_flat(p, bit)),
        ("i386", I386_HEADER, lambda p: parse_flat(p, bit)),
        ("x32", X32_HEADER, lambda p: parse_flat(p, bit)),
        ("aarch64", GENERIC_HEADER, lambda p: parse_generic(p, AARCH64_DEFINES)),
    ]
    tables = {}
    for arch, rel, parse in jobs:
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            raise GenError("%s: no such file" % path)
        tables[arch] = parse(path)

    flat = os.path.join(root, ARM64_FLAT_HEADER)
    cross_checked = os.path.exists(flat)
    if cross_checked:
        arm64 = parse_flat(flat, bit)
        if arm64 != tables["aarch64"]:
            diff = sorted(set(arm64.items()) ^ set(tables["aarch64"].items()))
            raise GenError("%s evaluates to a table other than %s; differences: %r"
                           % (GENERIC_HEADER, ARM64_FLAT_HEADER, diff))

    # Every check passes before anything is written.
    for arch, _, _ in jobs:
        check(arch, tables[arch], info)
    check_unified(tables)

    stale = []
    for arch, rel, _ in jobs:
        table = tables[arch]
        text = render(arch, rel, table, info, cross_checked)
        dest = os.path.join(OUT_DIR, arch + ".rs")
        old = None
        if os.path.exists(dest):
            with open(dest, encoding="utf-8") as f:
                old = f.read()
        if args.check:
            if old != text:
                stale.append(dest)
        elif old != text:
            os.makedirs(OUT_DIR, exist_ok=True)
            with open(dest, "w", encoding="utf-8") as f:
                f.write(text)
        print("%-8s %4d syscalls  <- %s" % (arch, len(table), os.path.join(root, rel)))
    pkg = "linux-libc-dev %s" % info["version"] if info["version"] else "package unknown"
    if info["suite"]:
        pkg += " (%s)" % info["suite"]
    print("headers: Linux %s, %s" % (info["kernel"], pkg))
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except GenError as e:
        print("gen-syscalls: error: %s" % e, file=sys.stderr)
        sys.exit(2)
