"""Simulators for development and tests: the payment gateway and the WAN proxy."""
