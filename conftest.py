"""pytest hook for test_dpop.py: one closing line naming any vector set that was not found."""


def pytest_terminal_summary(terminalreporter):
    import sys

    module = sys.modules.get("test_dpop")
    missing = sorted(getattr(module, "MISSING_VECTORS", ()))
    if missing:
        terminalreporter.write_line(
            "vector sets NOT FOUND (their tests did not run): " + ", ".join(missing), red=True
        )
