"""Device-test script: main raises, so the procedure must end FAILED with the traceback."""


def _inner(value: int) -> None:
    raise ValueError(f"dev_raise failed on purpose with {value}")


def main(value: int = 42) -> None:
    _inner(value)
