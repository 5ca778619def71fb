"""Tests of deploy/: the Kubernetes manifests against the upstream schemas."""
