"""egress-monitor: a network sensor for unsanctioned use of facial-recognition services."""

__version__ = "0.1.0"
