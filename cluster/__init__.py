"""Launcher and operator CLI of the local cluster."""
