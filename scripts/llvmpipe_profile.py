#!/usr/bin/env python3
"""Where the shader time goes on llvmpipe: a profile of the JIT code by instruction kind.

llvmpipe compiles each pipeline to x86 code in anonymous executable memory, which perf samples
but cannot name or disassemble. This runs a scorefield command, lets it warm up, samples it with
perf, dumps its executable anonymous mappings with gdb while it still runs, disassembles them
with objdump, cuts them into functions (a `push` after a `ret`), and prints, per hot function,
the share of samples on each kind of instruction: the per-lane loads llvmpipe makes of a
non-constant-offset load (vpextrd / vpinsrd sequences), its per-lane store loops (scalar movs
and branches), float math, stack (spill) moves, masks and the rest. The static counts (mul, add,
div, fma) tell which kernel a function is.

Needs perf, gdb and objdump (binutils); developer-only, not part of the tests. Run as root or
with perf_event_paranoid <= 1 and ptrace allowed. Example (BENCHMARKS.md, session 19):

    python3 scripts/llvmpipe_profile.py -- ./target/release/scorefield bench --workload W1 \
        --steps 3000 --repeats 1

With --listing DIR it also writes each shown function's disassembly with its samples per
instruction, where the hot loops and the loads that stall on cache misses (a load whose next
instruction collects the samples) can be read (BENCHMARKS.md, session 20).
"""

import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

SCALAR = {"jmp", "mov", "je", "jne", "jae", "jb", "cmp", "cmpl", "and", "test", "testb", "inc", "sar",
          "shr", "shl", "xor", "add", "or", "movl", "movslq", "not"}
LANE_MOVES = {"vpextrd", "vpinsrd", "vextracti128", "vextracti32x4", "vinserti128", "vinserti32x4",
              "vmovd", "vmovss", "vextractps", "vinsertps"}


def kind(text):
    """The class of one disassembled instruction."""
    op = text.split()[0] if text else ""
    if op in LANE_MOVES:
        return "per-lane load/store moves"
    if op in SCALAR:
        return "scalar and branches (per-lane store loops)"
    if op.startswith(("vfmadd", "vfmsub", "vfnmadd")):
        return "fma"
    if op.startswith(("vmul", "vadd", "vsub", "vdiv", "vrcp", "vmin", "vmax", "vround")) and op.endswith("ps"):
        return "float math"
    if op.startswith("vmov") and "rsp" in text:
        return "stack (spill) moves"
    if op.startswith(("vpcmp", "vpmaxu", "vpminu", "vpmovm2", "vblend", "vpblend", "vptest", "k")):
        return "masks, bounds, selects"
    if op.startswith(("vperm", "vbroadcast", "vpbroadcast", "vshuf", "vpshuf")):
        return "broadcasts"
    if op.startswith("vp"):
        return "integer vector (indices)"
    return "other"


def jit_mappings(pid):
    """The process's anonymous executable mappings: llvmpipe's JIT code."""
    ranges = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1] == "r-xp" and len(fields) < 6:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def disassemble(pid, ranges, workdir):
    """{address: instruction text} over the JIT mappings, dumped while the process runs."""
    commands = []
    for start, end in ranges:
        commands += ["-ex", f"dump binary memory {workdir}/jit_{start:x}.bin {start:#x} {end:#x}"]
    subprocess.run(["gdb", "-p", str(pid), "-batch", *commands], capture_output=True, check=False)
    instructions = {}
    for start, _ in ranges:
        path = f"{workdir}/jit_{start:x}.bin"
        if not os.path.exists(path):
            continue
        out = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64", f"--adjust-vma={start:#x}", path],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)", line)
            if m:
                instructions[int(m.group(1), 16)] = m.group(2).strip()
    return instructions


def function_starts(addresses, instructions):
    """Where functions start: the first `push` after a `ret` (padding between them skipped)."""
    starts, after_ret = [], True
    for a in addresses:
        op = instructions[a].split()[0] if instructions[a] else ""
        if op == "push" and after_ret:
            starts.append(a)
            after_ret = False
        elif op == "ret":
            after_ret = True
        elif op and not op.startswith(("nop", "int3", "data16", "xchg", "(bad)")):
            after_ret = False
    return starts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=float, default=25, help="seconds before sampling (compiles, start-up)")
    parser.add_argument("--seconds", type=float, default=8, help="seconds of sampling")
    parser.add_argument("--top", type=int, default=6, help="functions to show")
    parser.add_argument("--listing", metavar="DIR",
                        help="also write each shown function's disassembly, samples per instruction, to DIR")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to profile, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        sys.exit("llvmpipe_profile: give the command to profile after --")
    env = dict(os.environ, XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", "/tmp"))
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(args.warmup)
            if proc.poll() is not None:
                sys.exit("llvmpipe_profile: the command ended during the warm-up; give it more work")
            data = f"{workdir}/perf.data"
            subprocess.run(["perf", "record", "-q", "-F", "1999", "-o", data, "-p", str(proc.pid), "--", "sleep",
                            str(args.seconds)], check=True, capture_output=True)
            ranges = jit_mappings(proc.pid)
            instructions = disassemble(proc.pid, ranges, workdir)
        finally:
            proc.kill()
        ips = [int(x, 16) for x in subprocess.run(["perf", "script", "-i", data, "-F", "ip"], capture_output=True,
                                                   text=True, check=True).stdout.split()]
    addresses = sorted(instructions)
    starts = function_starts(addresses, instructions)
    jit = [ip for ip in ips if any(a <= ip < b for a, b in ranges)]
    print(f"{len(ips)} samples, {100 * len(jit) / max(len(ips), 1):.1f}% in JIT code")
    per_function = collections.defaultdict(collections.Counter)
    per_instruction = collections.Counter()
    for ip in jit:
        f = bisect.bisect_right(starts, ip) - 1
        i = bisect.bisect_right(addresses, ip) - 1
        text = instructions[addresses[i]] if i >= 0 else ""
        per_instruction[addresses[i] if i >= 0 else 0] += 1
        per_function[starts[f] if f >= 0 else 0][kind(text)] += 1
    for rank, (start, kinds) in enumerate(sorted(per_function.items(), key=lambda x: -sum(x[1].values()))[: args.top]):
        total = sum(kinds.values())
        f = starts.index(start) if start in starts else -1
        end = starts[f + 1] if 0 <= f < len(starts) - 1 else start
        body = addresses[bisect.bisect_left(addresses, start):bisect.bisect_left(addresses, end)]
        ops = collections.Counter(instructions[a].split()[0] for a in body if instructions[a])
        if args.listing:
            os.makedirs(args.listing, exist_ok=True)
            with open(f"{args.listing}/{rank}_{start:x}.s", "w") as listing:
                for a in body:
                    listing.write(f"{per_instruction[a]:6d}  {a:x}  {instructions[a]}\n")
        fma = sum(v for k, v in ops.items() if k.startswith("vfmadd"))
        print(f"\nfunction {start:#x}: {100 * total / len(jit):.1f}% of JIT samples; static: "
              f"{ops['vmulps']} vmulps, {ops['vaddps']} vaddps, {fma} fma, {ops['vdivps']} vdivps")
        for k, v in kinds.most_common():
            print(f"  {100 * v / total:5.1f}%  {k}")


if __name__ == "__main__":
    main()
