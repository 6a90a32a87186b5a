"""The embedded dev cluster: launcher, supervisor, reaper, ports, faults and the store
processes it starts."""
