"""Device-test and benchmark script: prints lines, publishes user events, reports progress."""

from tango_oet.scripting import progress, publish


def main(lines: int = 10, events: int = 0, every: int = 0) -> dict[str, int]:
    for i in range(lines):
        print(f"line {i}")
    for i in range(events):
        publish("tick", n=i)
        if every and (i + 1) % every == 0:
            progress(i + 1, events, f"{i + 1} events")
    return {"lines": lines, "events": events}
