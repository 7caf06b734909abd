"""Identical firewall rules are counted, not lumped together: rollback takes out the copy the
run added and leaves a copy someone added by hand, and puts back only the copies a
firewall.rule.absent step removed, each at its old place — from any point apply reached."""

from __future__ import annotations

import pytest

from tests.integration.linux.conftest import Lab

pytestmark = pytest.mark.root

MASQUERADE = ["-s", "172.16.42.0/24", "!", "-d", "172.16.42.0/24", "-j", "MASQUERADE"]
FORWARD = ["-i", "docker0", "-o", "docker0", "-j", "ACCEPT"]
OTHERS = (["-i", "lo", "-j", "ACCEPT"], ["-o", "lo", "-j", "ACCEPT"])


def rules(lab: Lab, table: str, chain: str) -> list[str]:
    out = lab.ns.run(["iptables-save", "-t", table]).stdout
    return [line for line in out.splitlines() if line.startswith(f"-A {chain} ")]


def toml_list(argv: list[str]) -> str:
    return "[" + ", ".join(f'"{a}"' for a in argv) + "]"


def test_rollback_leaves_the_copies_added_by_hand(lab: Lab) -> None:
    for rule in OTHERS:
        lab.sh(["iptables", "-A", "FORWARD", *rule])
    workflow = lab.workflow(
        f'[[steps]]\nid = "nat"\naction = "firewall.rule.present"\ntable = "nat"\n'
        f'chain = "POSTROUTING"\nrule = {toml_list(MASQUERADE)}\n\n'
        f'[[steps]]\nid = "forward"\naction = "firewall.rule.present"\nchain = "FORWARD"\n'
        f'rule = {toml_list(FORWARD)}\n')
    run_id, _ = lab.run(workflow, "modern")
    forward_by_run = rules(lab, "filter", "FORWARD")
    assert len(forward_by_run) == 3
    # Exact copies by hand: one appended after the run's, one inserted before everything.
    lab.sh(["iptables", "-t", "nat", "-A", "POSTROUTING", *MASQUERADE],
           ["iptables", "-I", "FORWARD", "1", *FORWARD])

    lab.call("rollback", run_id)
    assert len(rules(lab, "nat", "POSTROUTING")) == 1
    # the run's copy (last) is gone, the one inserted by hand at the top stays
    assert rules(lab, "filter", "FORWARD") == [forward_by_run[2], *forward_by_run[:2]]


def test_rollback_of_absent_puts_back_only_the_missing_copies_where_they_were(lab: Lab) -> None:
    lab.sh(["iptables", "-A", "FORWARD", *FORWARD], ["iptables", "-A", "FORWARD", *OTHERS[0]],
           ["iptables", "-A", "FORWARD", *FORWARD])
    before = rules(lab, "filter", "FORWARD")
    workflow = lab.workflow(f'[[steps]]\nid = "no-forward"\naction = "firewall.rule.absent"\n'
                            f'chain = "FORWARD"\nrule = {toml_list(FORWARD)}\n')
    run_id, _ = lab.run(workflow, "modern")
    assert rules(lab, "filter", "FORWARD") == [before[1]]
    # As if apply had been killed after deleting the last copy only (it deletes last first).
    lab.sh(["iptables", "-I", "FORWARD", "1", *FORWARD])

    lab.call("rollback", run_id)
    assert rules(lab, "filter", "FORWARD") == before


def test_rollback_removes_a_chain_apply_made_before_it_could_add_the_rule(lab: Lab) -> None:
    """A run killed between `iptables -N` and `-A`: the chain is the step's, and goes."""
    workflow = lab.workflow(f'[[steps]]\nid = "web"\naction = "firewall.rule.present"\n'
                            f'chain = "RF-WEB"\nrule = {toml_list(FORWARD)}\n')
    run_id, _ = lab.run(workflow, "modern")
    lab.sh(["iptables", "-D", "RF-WEB", "1"])
    lab.call("rollback", run_id)
    assert ":RF-WEB" not in lab.ns.run(["iptables-save", "-t", "filter"]).stdout
