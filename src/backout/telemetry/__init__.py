"""Telemetry: per-release, per-second batches of what a release served.

The judges' input. ``batches`` defines a batch (counts, errors, a latency histogram, output
classes) and how the store keeps them; ``source`` is the ``TelemetrySource`` seam through
which the controller reads them, from backout's gateway or another metric system.
"""
