"""aigate end-to-end test harness: mock services and a real-Envoy launcher.

Run from the repository root so that ``integration`` is importable:
``python -m integration.mocks --port 8001`` or ``python -m pytest integration/tests``.
"""
