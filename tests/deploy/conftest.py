"""Fixtures for the deployment tests: the tiny exported bundle of the service tests."""

from __future__ import annotations

from tests.service import conftest as service

bundle_dir = service.bundle_dir  # a session fixture: a tiny joint network, exported
