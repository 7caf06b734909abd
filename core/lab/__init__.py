"""The lab: simulated hosts on this machine, each a network namespace with its own Open vSwitch
daemons (userspace datapath) and its own dockerd. Used by `runflow lab` and by the integration
tests; it never changes the root network namespace."""
