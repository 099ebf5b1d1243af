#!/usr/bin/env python3
"""Run a command and report wall time and peak RSS (from wait4's rusage).

    measure.py [--runs N] [--label L] -- CMD ARGS...

Prints one JSON object per run on stdout: {"label", "run", "wall_s", "max_rss_kib", "rc"}.
The command's own stdout is discarded; a non-zero exit fails the measurement.
"""
import argparse, json, os, subprocess, sys, time

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--label", default="")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command")
    for i in range(a.runs):
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        rc = os.waitstatus_to_exitcode(status)
        print(json.dumps({"label": a.label, "run": i, "wall_s": round(wall, 4),
                          "max_rss_kib": ru.ru_maxrss, "rc": rc}), flush=True)
        if rc != 0:
            print(f"measure.py: {cmd[0]} exited {rc}", file=sys.stderr)
            sys.exit(1)

if __name__ == "__main__":
    main()
