"""runflow.testing: the test kit for plugin authors (installed as `runflow.testing`; its files
live in core/testing/).

It is a pytest plugin, registered through the entry point group `pytest11`, so in any project
where runflow is installed its fixtures are there without an import:

    netns_host       a throw-away host: a network namespace of its own (needs root), deleted
                     after the test, however it ends
    make_netns_host  a factory of more of them

and a check that any action implementation — built-in or a plugin's — keeps the contract:

    from runflow.testing import roundtrip, run_on

    def test_mtu(netns_host):
        run_on(netns_host, ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        roundtrip(MtuSet, {"name": "v0", "mtu": 1400}, netns_host)

`apply(action, args, host)` sets a host up with an action (runflow's own or a plugin's),
`run_on(host, argv)` with a command, `on_host(host, fn)` calls fn inside the host.

`roundtrip` observes (the state must survive JSON, as the journal keeps it), applies, checks
that the desired state holds, that a second run would skip, undoes, checks that the host is as
observed before, and undoes again (which must be harmless: undo also runs for steps whose
apply never happened). See contrib/PLUGINS.md.
"""

from .roundtrip import Roundtrip, RoundtripFailure, apply, on_host, roundtrip, run_on

__all__ = ["Roundtrip", "RoundtripFailure", "apply", "on_host", "roundtrip", "run_on"]
