"""Traffic: route tables, deployments, and the routers that carry them out.

A deployment is a model's live state (weights, shadow, pins, capture, faults); its route
table is what a router serves, swapped atomically and versioned by a generation. The
``TrafficRouter`` protocol is the seam between the controller and whatever carries the
traffic: backout's own gateway first.
"""
