#!/usr/bin/python3
"""A stateful fake `ipvsadm` for rsbal's fault tests.

It keeps an IPVS table in the file `table` next to itself (in `ipvsadm -Sn`
form), so a restarted rsbal adopts what the previous run left, exactly as with
a kernel. Everything lives in the directory of this script:

  table       the current table, `-Sn` text (the test may seed it)
  journal     one JSON object per invocation (see below), appended
  ipvsadm.lock  serialises invocations
  Control files (present = on; the content of `fail*` is the stderr text):
  fail        every invocation prints the content to stderr and exits 1
  fail-Sn     only `-Sn` fails that way
  fail-R      only `-R` fails that way
  hang        every invocation sleeps forever (its pid is appended to `hung`)
  hang-R      only `-R` hangs
  (vanishing: the test renames the script away and back)

Supported: `-Sn` / `-S -n` / `--save --numeric`: print the table.
`-R` / `--restore`: read commands from stdin, one per line
(-A/-E/-D services, -a/-e/-d destinations; -t/-u SERVICE, -s SCHED, -o,
-r RIP:PORT, -w WEIGHT, -g/-m/-i). `-C` (clear) as a single command too.

Errors are those of the kernel: adding an existing service or destination,
editing/deleting a missing one, a destination of a missing service. Like the
real `ipvsadm -R`, which runs its input line by line and stops at the first
error, the lines BEFORE the failing one stay applied, the failing line and
everything after it are not, and the exit status is 1 with
"line N: <error>" on stderr.

Journal entry keys: t (unix time, float), argv, pid, rc, stdin (list of
lines, -R only), error (str or null), applied (number of -R lines applied),
tables (for -R: the table after each applied line, each a list of -Sn lines;
the first element is the table before the batch), event ("run", "hang").
"""

import fcntl
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "table")
JOURNAL = os.path.join(HERE, "journal")
LOCK = os.path.join(HERE, "ipvsadm.lock")


def ctl(name):
    path = os.path.join(HERE, name)
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip() or ("fake ipvsadm: told to fail (%s)" % name)
    return None


def journal(entry):
    entry.setdefault("t", time.time())
    entry.setdefault("pid", os.getpid())
    entry.setdefault("argv", sys.argv[1:])
    with open(JOURNAL, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


# The table: ordered dict service-key -> {"flag": "-t", "addr": ..., "sched":
# ..., "ops": bool, "dests": ordered dict rip -> {"w": int, "fwd": "-g"}}.
def load():
    table = {}
    try:
        text = open(TABLE).read()
    except FileNotFoundError:
        return table
    for line in text.splitlines():
        if line.strip():
            err = run_line(table, line)
            if err:
                raise SystemExit("fake ipvsadm: bad table file line %r: %s" % (line, err))
    return table


def dump(table):
    out = []
    for svc in table.values():
        line = "-A %s %s -s %s" % (svc["flag"], svc["addr"], svc["sched"])
        if svc["ops"]:
            line += " -o"
        out.append(line)
        for rip, d in svc["dests"].items():
            out.append("-a %s %s -r %s %s -w %d" % (svc["flag"], svc["addr"], rip, d["fwd"], d["w"]))
    return out


def save(table):
    tmp = TABLE + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(l + "\n" for l in dump(table)))
    os.rename(tmp, TABLE)


def parse(tokens):
    o = {"fwd": None, "ops": False}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if t in ("-t", "--tcp-service", "-u", "--udp-service"):
            if nxt is None:
                return None, "option %s needs an argument" % t
            o["flag"] = "-t" if t in ("-t", "--tcp-service") else "-u"
            o["addr"] = nxt
            i += 2
        elif t in ("-s", "--scheduler"):
            o["sched"] = nxt
            i += 2
        elif t in ("-r", "--real-server"):
            o["rip"] = nxt
            i += 2
        elif t in ("-w", "--weight"):
            try:
                o["w"] = int(nxt)
            except (TypeError, ValueError):
                return None, "illegal weight specified"
            i += 2
        elif t in ("-g", "--gatewaying"):
            o["fwd"] = "-g"
            i += 1
        elif t in ("-m", "--masquerading"):
            o["fwd"] = "-m"
            i += 1
        elif t in ("-i", "--ipip"):
            o["fwd"] = "-i"
            i += 1
        elif t in ("-o", "--ops"):
            o["ops"] = True
            i += 1
        else:
            return None, "unknown option %s" % t
    return o, None


def run_line(table, line):
    """Applies one command to `table`; returns an error text or None."""
    tokens = line.split()
    if not tokens:
        return None
    op, rest = tokens[0], tokens[1:]
    if op in ("-C", "--clear"):
        table.clear()
        return None
    o, err = parse(rest)
    if err:
        return err
    if "addr" not in o:
        return "missing service (-t/-u)"
    key = "%s %s" % (o["flag"], o["addr"])
    svc = table.get(key)
    if op in ("-A", "--add-service"):
        if svc is not None:
            return "Service already exists"
        table[key] = {"flag": o["flag"], "addr": o["addr"], "sched": o.get("sched") or "wlc",
                      "ops": o["ops"], "dests": {}}
    elif op in ("-E", "--edit-service"):
        if svc is None:
            return "No such service"
        svc["sched"] = o.get("sched") or "wlc"
        svc["ops"] = o["ops"]
    elif op in ("-D", "--delete-service"):
        if svc is None:
            return "No such service"
        del table[key]
    elif op in ("-a", "--add-server", "-e", "--edit-server", "-d", "--delete-server"):
        if svc is None:
            return "No such service"
        rip = o.get("rip")
        if not rip:
            return "missing real server (-r)"
        if op in ("-a", "--add-server"):
            if rip in svc["dests"]:
                return "Destination already exists"
            svc["dests"][rip] = {"w": o.get("w", 1), "fwd": o["fwd"] or "-g"}
        elif op in ("-e", "--edit-server"):
            if rip not in svc["dests"]:
                return "No such destination"
            svc["dests"][rip] = {"w": o.get("w", 1), "fwd": o["fwd"] or "-g"}
        else:
            if rip not in svc["dests"]:
                return "No such destination"
            del svc["dests"][rip]
    else:
        return "unknown command %s" % op
    return None


def fail_with(msg, entry):
    sys.stderr.write(msg + "\n")
    entry.update(rc=1, error=msg)
    journal(entry)
    sys.exit(1)


def main():
    argv = sys.argv[1:]
    restore = argv[:1] in (["-R"], ["--restore"])
    save_cmd = sorted(argv) in (["-Sn"], ["-S", "-n"], ["-n", "-S"], ["--numeric", "--save"])
    if ctl("hang") is not None or (restore and ctl("hang-R") is not None):
        with open(os.path.join(HERE, "hung"), "a") as f:
            f.write("%d\n" % os.getpid())
        journal({"event": "hang", "rc": None, "error": None})
        while True:
            time.sleep(3600)
    entry = {"event": "run", "error": None}
    msg = ctl("fail")
    if msg is None and save_cmd:
        msg = ctl("fail-Sn")
    if msg is None and restore:
        msg = ctl("fail-R")
    if msg is not None:
        if restore:
            entry["stdin"] = sys.stdin.read().splitlines()
            entry["applied"] = 0
        fail_with(msg, entry)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = load()
        if save_cmd:
            out = dump(table)
            sys.stdout.write("".join(l + "\n" for l in out))
            entry.update(rc=0)
            journal(entry)
            return 0
        if restore:
            lines = sys.stdin.read().splitlines()
            entry["stdin"] = lines
            tables = [dump(table)]
            applied = 0
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                err = run_line(table, line)
                if err:
                    save(table)
                    entry.update(applied=applied, tables=tables)
                    fail_with("line %d: %s: %s" % (n, line, err), entry)
                applied += 1
                tables.append(dump(table))
            save(table)
            entry.update(rc=0, applied=applied, tables=tables)
            journal(entry)
            return 0
        fail_with("fake ipvsadm: unsupported arguments %r" % argv, entry)


if __name__ == "__main__":
    sys.exit(main())
