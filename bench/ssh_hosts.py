#!/usr/bin/env python3
"""runflow over SSH, measured on the lab (`runflow lab up --ssh`: a real sshd in each host's
namespace, the real OpenSSH client, reached through `runflow lab connect`):

1. gre      workflows/multihost-gre.toml (--target centos6) on h1 and h2 over SSH, against
            the same run on the same hosts as `netns` hosts. Goal: SSH <= 1.5x netns.
2. foreach  a for_each of N veth pairs (default 200; a bridge, the pairs, their ports, links
            up) on h1 over SSH, against the same run on h1 as a netns host (the local
            centos6 run: the same commands without SSH). Goal: SSH <= 1.3x local.
3. ansible  the same steps as multihost-gre as an Ansible playbook (ansible-core in a venv of
            the bench's own, never the project's; `command`/`shell` modules, ControlPersist
            and pipelining) on h1 and h2 over the same SSH (known_hosts, key, ProxyCommand).
            Goal: runflow >= 10x faster. Both times are printed.
4. scale    a second lab with --hosts 32 --no-docker: a Linux + OVS workflow (centos6: every
            read and change a command over SSH) on all 32 hosts
            in lockstep (--forks, default runflow's), against the same on 2 of them. Goal:
            32 hosts <= 3x the 2-host time. The control process's peak memory (max RSS of the
            runflow process, its ssh children excluded) is printed for both.

Each runflow figure is the wall time of the `runflow run` process (start-up, connecting,
locks, plan, journal included), the median of --repeat runs (the variants compared take
turns); every run is rolled back (untimed) before the next. One JSON line per figure on stdout; a summary on stderr.

Usage (root; the lab's prerequisites, openssh-server/-client, ethtool; network to PyPI for
ansible-core the first time):
    python3 bench/ssh_hosts.py [--only gre,foreach,ansible,scale] [--repeat 3] [--items 200]
                               [--hosts 32] [--forks N] [--ansible-venv DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRE = REPO / "workflows" / "multihost-gre.toml"
RUNFLOW = [sys.executable, "-m", "runflow.core.cli"]

FOREACH = """\
[workflow]
name = "bench-veth"

[vars]
n = {n}

[[steps]]
id = "bridge"
action = "bridge.present"
name = "bv0"

[[steps]]
id = "pairs"
action = "veth.present"
for_each = "range(n)"
name = "bva{{{{ item }}}}"
peer = "bvb{{{{ item }}}}"

[[steps]]
id = "ports"
action = "bridge.port"
for_each = "range(n)"
bridge = "bv0"
name = "bva{{{{ item }}}}"

[[steps]]
id = "up"
action = "link.set"
for_each = "range(n)"
name = "bva{{{{ item }}}}"
state = "up"
"""

SCALE = """\
[workflow]
name = "bench-scale"

[[steps]]
id = "ovs-bridge"
action = "ovs.bridge.present"
name = "br0"
datapath_type = "netdev"

[[steps]]
id = "ovs-port"
action = "ovs.port.present"
bridge = "br0"
name = "vx0"
type = "vxlan"
options = { remote_ip = "{{ remote_ip }}" }

[[steps]]
id = "bridge"
action = "bridge.present"
name = "sb0"

[[steps]]
id = "address"
action = "addr.present"
dev = "sb0"
address = "{{ bridge_address }}"

[[steps]]
id = "ovs-into-bridge"
action = "bridge.port"
bridge = "sb0"
name = "br0"

[[steps]]
id = "up"
action = "link.set"
for_each = ["br0", "sb0"]
name = "{{ item }}"
state = "up"
"""


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


class BenchLab:
    """A lab of its own for the bench, in a short directory under /tmp."""

    def __init__(self, hosts: int, *, docker: bool) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rfb", dir="/tmp"))
        self.env = {**os.environ, "RUNFLOW_LAB": str(self.root / "lab"),
                    "RUNFLOW_HOME": str(self.root / "home")}
        self.hosts = hosts
        args = ["lab", "up", "--ssh", "--hosts", str(hosts), "--prefix",
                f"rb{os.getpid() % 10000}"]
        started = time.monotonic()
        done = self.runflow(*args, *([] if docker else ["--no-docker"]))
        if done.returncode != 0:
            self.down()
            raise SystemExit(f"lab up failed: {done.stderr}")
        say(f"lab of {hosts} SSH hosts up in {time.monotonic() - started:.1f} s")
        self.ssh_inventory = self.root / "lab" / "inventory.toml"
        self.netns_inventory = self.root / "netns.toml"
        self._write_netns_inventory(docker)

    def _write_netns_inventory(self, docker: bool) -> None:
        sys.path.insert(0, str(REPO))
        from runflow.core.lab.lab import Lab

        lab = Lab(self.root / "lab")
        self.netns_inventory.write_text(lab.inventory_text(lab.hosts(), docker=docker))

    def runflow(self, *args: object) -> subprocess.CompletedProcess:
        return subprocess.run([*RUNFLOW, *map(str, args)], capture_output=True, text=True,
                              env=self.env, timeout=1800)

    def timed(self, *args: object) -> tuple[float, int, float]:
        """Seconds, peak RSS (KiB) and CPU seconds (its own and its children's: the ssh
        clients and relays, the control side's share) of one runflow run, which must
        succeed; then it is rolled back, untimed."""
        with tempfile.TemporaryFile("w+") as err:
            started = time.monotonic()
            proc = subprocess.Popen([*RUNFLOW, *map(str, args)], stdout=subprocess.DEVNULL,
                                    stderr=err, env=self.env)
            _, status, usage = os.wait4(proc.pid, 0)  # its own peak RSS, not ours
            seconds = time.monotonic() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                raise SystemExit(f"runflow {shlex.join(map(str, args))} failed:\n{err.read()}")
        rss, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
        rolled = self.runflow("rollback", "last")
        if rolled.returncode != 0:
            raise SystemExit(f"rollback failed:\n{rolled.stderr}")
        return seconds, rss, cpu

    def down(self) -> None:
        self.runflow("lab", "down")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)])


def median_run(lab: BenchLab, repeat: int, *args: object) -> tuple[float, int, float]:
    """The median time, the largest peak RSS and the median CPU time of repeat runs."""
    runs = [lab.timed(*args) for _ in range(repeat)]
    return (statistics.median(s for s, _, _ in runs), max(r for _, r, _ in runs),
            statistics.median(c for _, _, c in runs))


def interleaved(lab: BenchLab, repeat: int, *variants: list[object]) -> list[float]:
    """The median time of each variant, their runs taken in turns (the machine's load moves:
    runs of one variant after the other's would measure the load as much as the variant)."""
    times: list[list[float]] = [[] for _ in variants]
    for _ in range(repeat):
        for i, args in enumerate(variants):
            times[i].append(lab.timed(*args)[0])
    say("runs: " + "; ".join(", ".join(f"{t:.2f}" for t in ts) for ts in times))
    return [statistics.median(t) for t in times]


def report(name: str, **figures: object) -> None:
    print(json.dumps({"figure": name, **figures}), flush=True)


# -- the figures ---------------------------------------------------------------------------------

def gre(lab: BenchLab, repeat: int) -> None:
    netns, ssh = interleaved(lab, repeat, [GRE, "-i", lab.netns_inventory, "--target", "centos6"],
                             [GRE, "-i", lab.ssh_inventory, "--target", "centos6"])
    report("gre", netns_s=round(netns, 3), ssh_s=round(ssh, 3), ratio=round(ssh / netns, 2),
           goal="<= 1.5")
    say(f"multihost-gre centos6: netns {netns:.2f} s, SSH {ssh:.2f} s ({ssh / netns:.2f}x; "
        "goal <= 1.5x)")


def foreach(lab: BenchLab, repeat: int, items: int) -> None:
    workflow = lab.root / "foreach.toml"
    workflow.write_text(FOREACH.format(n=items))
    local, ssh = interleaved(
        lab, repeat, [workflow, "-i", lab.netns_inventory, "--host", "h1", "--target", "centos6"],
        [workflow, "-i", lab.ssh_inventory, "--host", "h1", "--target", "centos6"])
    report("foreach", items=items, local_s=round(local, 3), ssh_s=round(ssh, 3),
           ratio=round(ssh / local, 2), goal="<= 1.3")
    say(f"for_each of {items} veth pairs centos6: local (netns) {local:.2f} s, SSH "
        f"{ssh:.2f} s ({ssh / local:.2f}x; goal <= 1.3x)")


PLAYBOOK = """\
- hosts: lab
  gather_facts: false
  tasks:
    - command: ovs-vsctl --db={{{{ ovsdb }}}} --may-exist add-br br0 -- set Bridge br0 datapath_type=netdev
    - command: ovs-vsctl --db={{{{ ovsdb }}}} --may-exist add-port br0 gre0 -- set Interface gre0 type=gre options:remote_ip={{{{ remote_ip }}}}
    - command: ip link add docker0 type bridge
    - command: ip addr add {{{{ bridge_address }}}} dev docker0
    - command: brctl addif docker0 br0
    - command: ip link set br0 up
    - command: ip link set docker0 up
    - command: sysctl -w net.ipv4.ip_forward=1
    - command: iptables -t nat -A POSTROUTING -s 172.16.42.0/24 ! -d 172.16.42.0/24 -j MASQUERADE
    - command: iptables -A FORWARD -i docker0 -o docker0 -j ACCEPT
    - shell: printf 'other_args="-b docker0 --fixed-cidr={{{{ fixed_cidr }}}}"\\n' > {{{{ sysconfig }}}}.new && mv {{{{ sysconfig }}}}.new {{{{ sysconfig }}}}
    - command: "{{{{ restart }}}}"
    - command: ping -c 1 -W 10 {{{{ peer_address }}}}
"""

TEARDOWN = """\
- hosts: lab
  gather_facts: false
  tasks:
    - shell: ip link del docker0; ovs-vsctl --db={{ ovsdb }} --if-exists del-br br0; iptables -t nat -F POSTROUTING; iptables -F FORWARD; sysctl -w net.ipv4.ip_forward=0; true
"""


def ansible(lab: BenchLab, repeat: int, venv: Path) -> None:
    if not (venv / "bin" / "ansible-playbook").exists():
        say(f"installing ansible-core into {venv} (the bench's own venv)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    hosts = tomllib.loads(lab.ssh_inventory.read_text())["hosts"]
    inventory: dict = {"lab": {"hosts": {}}}
    for name in ("h1", "h2"):
        h, v = hosts[name], hosts[name]["vars"]
        inventory["lab"]["hosts"][name] = {
            "ansible_host": h["ssh"].split("@")[1], "ansible_user": "root",
            "ansible_ssh_private_key_file": h["ssh_identity"],
            # the host's own options: its ProxyCommand names it
            "ansible_ssh_common_args": " ".join(shlex.quote(o) for o in h["ssh_options"]),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ovsdb": h["ovsdb"], "remote_ip": v["remote_ip"],
            "bridge_address": v["bridge_address"], "fixed_cidr": v["fixed_cidr"],
            "peer_address": v["peer_address"], "sysconfig": h["docker_sysconfig"],
            "restart": shlex.join(h["services"]["docker"]["restart"]),
        }
    (lab.root / "hosts.yml").write_text(json.dumps(inventory))  # JSON is YAML
    (lab.root / "ansible.cfg").write_text(
        "[defaults]\nhost_key_checking = True\nforks = 5\n\n[ssh_connection]\n"
        "pipelining = True\nssh_args = -o ControlMaster=auto -o ControlPersist=60s\n"
        f"control_path_dir = {lab.root}/cp\n")
    (lab.root / "site.yml").write_text(PLAYBOOK.format())
    (lab.root / "teardown.yml").write_text(TEARDOWN)
    env = {**lab.env, "ANSIBLE_CONFIG": str(lab.root / "ansible.cfg"),
           "PYTHONWARNINGS": "ignore"}

    def playbook(name: str) -> float:
        started = time.monotonic()
        done = subprocess.run([str(venv / "bin" / "ansible-playbook"), "-i",
                               str(lab.root / "hosts.yml"), str(lab.root / name)],
                              capture_output=True, text=True, env=env, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"ansible-playbook {name} failed:\n{done.stdout}\n{done.stderr}")
        return time.monotonic() - started

    runflow_s, _, _ = median_run(lab, repeat, GRE, "-i", lab.ssh_inventory, "--target", "centos6")
    times = []
    for _ in range(repeat):
        times.append(playbook("site.yml"))
        playbook("teardown.yml")
    ansible_s = statistics.median(times)
    report("ansible", runflow_s=round(runflow_s, 3), ansible_s=round(ansible_s, 3),
           speedup=round(ansible_s / runflow_s, 2), goal=">= 10")
    say(f"multihost-gre: runflow over SSH {runflow_s:.2f} s, Ansible playbook "
        f"{ansible_s:.2f} s ({ansible_s / runflow_s:.1f}x; goal >= 10x)")


def scale(hosts: int, repeat: int, forks: int | None) -> None:
    lab = BenchLab(hosts, docker=False)
    try:
        workflow = lab.root / "scale.toml"
        workflow.write_text(SCALE)
        extra = ["--target", "centos6", *(["--forks", str(forks)] if forks else [])]
        two, two_rss, two_cpu = median_run(lab, repeat, workflow, "-i", lab.ssh_inventory, "--host",
                                  "h1", "--host", "h2", *extra)
        many, many_rss, many_cpu = median_run(lab, repeat, workflow, "-i", lab.ssh_inventory, *extra)
        report("scale", hosts=hosts, two_s=round(two, 3), all_s=round(many, 3),
               ratio=round(many / two, 2), goal="<= 3", two_rss_kib=two_rss,
               all_rss_kib=many_rss, two_cpu_s=round(two_cpu, 2), all_cpu_s=round(many_cpu, 2),
               forks=forks or "default")
        say(f"Linux+OVS workflow (centos6) over SSH: 2 hosts {two:.2f} s, {hosts} hosts "
            f"{many:.2f} s ({many / two:.2f}x; goal <= 3x); control process peak RSS "
            f"{two_rss / 1024:.0f} MiB (2 hosts), {many_rss / 1024:.0f} MiB ({hosts} hosts); "
            f"control side CPU (runflow, its ssh clients and relays) {two_cpu:.2f} s and "
            f"{many_cpu:.2f} s")
    finally:
        lab.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="gre,foreach,ansible,scale")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=32)
    parser.add_argument("--forks", type=int)
    parser.add_argument("--ansible-venv", type=Path, default=Path("/tmp/rf-bench-ansible"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only & {"gre", "foreach", "ansible"}:
        lab = BenchLab(2, docker=True)
        try:
            if "gre" in only:
                gre(lab, args.repeat)
            if "foreach" in only:
                foreach(lab, args.repeat, args.items)
            if "ansible" in only:
                ansible(lab, args.repeat, args.ansible_venv)
        finally:
            lab.down()
    if "scale" in only:
        scale(args.hosts, args.repeat, args.forks)


if __name__ == "__main__":
    main()
