"""Configuration files: the strict YAML layer (``yamlsource``) and the sensor settings (``sensor``).

Deliberately imports nothing: the blocklist and approvals loaders import ``yamlsource``, and
``sensor`` imports the alert engine (which imports the approvals loader), so an eager import here
would make a cycle.
"""
