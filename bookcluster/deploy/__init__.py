"""Containers and hosts: one process of the topology as a service, and its health check."""
