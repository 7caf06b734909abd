"""`runflow watch`: workflows driven by events.

sources.py   what an event source plugin implements (the docker one: backends/docker/events.py)
watches.py   the workflows watched, their [watch] tables checked against their sources
queue.py     each watched object's desired state, and the workers that settle it
runner.py    runs and rollbacks through the Session, on each worker's threads and connections
leases.py    the watcher's hold on its hosts' run locks
watcher.py   the listeners, the workers and the signals put together
"""
