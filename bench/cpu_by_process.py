#!/usr/bin/env python3
"""CPU used by each process (PostgreSQL backends grouped by kind) over a window.

    bench/cpu_by_process.py [seconds, default 10]

Run it while a load runs (e.g. `pgtrack simulate --scenario seed` in another shell, once its
progress lines have started): it reads /proc twice and prints each process's share of one core,
busiest first. PostgreSQL's client backends are summed into one line per database and user.
"""
import os
import re
import sys
import time
from collections import Counter


def processes():
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/stat') as f:
                stat = f.read()
            with open(f'/proc/{pid}/cmdline') as f:
                command = f.read().replace('\0', ' ').strip()
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index('(') + 1:stat.rindex(')')]
        fields = stat[stat.rindex(')') + 2:].split()
        found[pid] = (name, command, int(fields[11]) + int(fields[12]))  # utime + stime, in ticks
    return found


def label(name, command):
    if name == 'postgres' or command.startswith('postgres:'):
        kind = command.split(':', 1)[1].strip() if ':' in command else 'postmaster'
        kind = re.sub(r'\S+\(\d+\)|\[local\]', '', kind)  # the client's address
        kind = re.sub(r'\s+(idle|active|INSERT|SELECT|UPDATE|DELETE|COMMIT|BEGIN|idle in transaction.*|waiting)\b.*$', '', kind)
        return 'postgres: ' + ' '.join(kind.split())
    return f'{name}: {command[:60]}'


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    before = processes()
    time.sleep(seconds)
    after = processes()
    ticks = os.sysconf('SC_CLK_TCK')
    usage = Counter()
    for pid, (name, command, total) in after.items():
        used = (total - before.get(pid, (None, None, 0))[2]) / ticks
        if used > 0:
            usage[label(name, command)] += used
    for what, used in usage.most_common(12):
        print(f'{100 * used / seconds:6.1f} % of a core  {what}')
    print(f'{100 * sum(usage.values()) / seconds:6.1f} % of a core in all ({os.cpu_count()} cores)')


if __name__ == '__main__':
    main()
