"""Derived seat state: Redis keys and Lua scripts at a show's home master, the seat
mirror and its repair, node caches, seat maps, the change feed and live sockets."""
